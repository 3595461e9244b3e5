"""What proves an export: :mod:`.parity` (tolerances and comparisons), :mod:`.corpus` (the texts), :mod:`.verify`
(through a real tritonserver over HTTP and gRPC), :mod:`.soak` (bounded load with every answer checked) and
:mod:`.libtorch_check` and :mod:`.libtorch_text_check` (the model in C++ LibTorch, as NVIDIA's backend loads it;
the program itself: :mod:`.libtorch_runner`)."""
