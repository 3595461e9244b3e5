// libtorch_check: run a TorchScript model.pt through LibTorch alone, the way Triton's LibTorch backend does.
//
// Usage: libtorch_check MODEL_PT INPUT_FILE OUTPUT_FILE
//
// It loads the module under c10::InferenceMode (the backend's default), maps the named inputs onto forward()'s
// arguments with the backend's rules, calls forward() once per case, and writes every output as float32.
// Built and driven by exporter/libtorch_check.py, which also writes and reads the two files.
//
// Input file (all integers in decimal ASCII, data raw little-endian, rows in C order):
//   "teicheck-in 1 <n_cases>\n"
//   per case:   "case <n_tensors>\n"
//   per tensor: "<name> <dtype> <ndim> <d0> ... <dn-1>\n" then the raw bytes; dtype is int64, int32 or float32.
// Tensors appear in the order Triton would list them (the config.pbtxt input order).
//
// Output file:
//   "teicheck-out 1 <n_cases> <matching>\n"   matching: name | index | order (how inputs met forward()'s arguments)
//   per case:   "case <n_outputs>\n"
//   per output: "<index> <original dtype> <ndim> <d0> ... <dn-1>\n" then the data as raw little-endian float32.
//
// Exit status: 0 ok; 2 usage or file error; 3 the module cannot be loaded; 4 the inputs do not fit forward();
// 5 forward() failed; 6 forward() returned a type the Triton LibTorch backend refuses. The reason is on stderr.

#include <torch/script.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Failure : std::runtime_error {
  int code;
  Failure(int c, const std::string& what) : std::runtime_error(what), code(c) {}
};

struct NamedTensor {
  std::string name;
  torch::Tensor tensor;
};

bool host_is_little_endian() {
  const std::uint16_t probe = 1;
  unsigned char first = 0;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}

std::string read_line(std::istream& in, const char* what) {
  std::string line;
  if (!std::getline(in, line)) throw Failure(2, std::string("input file ended before ") + what);
  return line;
}

NamedTensor read_tensor(std::istream& in) {
  std::istringstream header(read_line(in, "a tensor header"));
  std::string name, dtype;
  int64_t ndim = -1;
  header >> name >> dtype >> ndim;
  if (!header || name.empty() || ndim < 0 || ndim > 8) throw Failure(2, "bad tensor header: '" + header.str() + "'");
  std::vector<int64_t> dims(static_cast<size_t>(ndim));
  int64_t count = 1;
  for (auto& d : dims) {
    if (!(header >> d) || d < 0) throw Failure(2, "bad dims in tensor header: '" + header.str() + "'");
    count *= d;
  }
  torch::ScalarType type;
  if (dtype == "int64") {
    type = torch::kInt64;
  } else if (dtype == "int32") {
    type = torch::kInt32;
  } else if (dtype == "float32") {
    type = torch::kFloat32;
  } else {
    throw Failure(2, "input '" + name + "' has dtype '" + dtype + "'; expected int64, int32 or float32");
  }
  torch::Tensor t = torch::empty(dims, torch::TensorOptions().dtype(type));
  const auto bytes = static_cast<std::streamsize>(count * static_cast<int64_t>(t.element_size()));
  if (bytes > 0 && !in.read(static_cast<char*>(t.data_ptr()), bytes)) {
    throw Failure(2, "input file ended inside the data of '" + name + "'");
  }
  return {name, t};
}

// The argument names of forward(), without `self`.
std::vector<std::string> forward_argument_names(torch::jit::Module& module) {
  const auto& schema = module.get_method("forward").function().getSchema();
  std::vector<std::string> names;
  const auto& args = schema.arguments();
  for (size_t i = 1; i < args.size(); ++i) names.push_back(args[i].name());
  return names;
}

// The index in a `<anything>__<index>` name, or -1 when the name is not of that form.
long suffix_index(const std::string& name) {
  const size_t at = name.rfind("__");
  if (at == std::string::npos || at == 0 || at + 2 == name.size() || name.size() - at > 11) return -1;
  long index = 0;
  for (size_t i = at + 2; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    index = index * 10 + (name[i] - '0');
  }
  return index;
}

// Where each input goes among forward()'s arguments, by the LibTorch backend's rules: by name when every input is
// named after a forward() argument, else by the index in `<anything>__<index>` names, else in the order given.
std::vector<size_t> match_inputs(const std::vector<NamedTensor>& inputs, const std::vector<std::string>& arg_names,
                                 std::string& how) {
  const size_t n = inputs.size();
  std::vector<size_t> position(n);
  bool all_named = true;
  for (size_t i = 0; i < n && all_named; ++i) {
    all_named = false;
    for (size_t j = 0; j < arg_names.size(); ++j) {
      if (arg_names[j] == inputs[i].name) {
        position[i] = j;
        all_named = true;
      }
    }
  }
  if (all_named) {
    how = "name";
    return position;
  }
  bool all_indexed = true;
  for (size_t i = 0; i < n && all_indexed; ++i) {
    const long index = suffix_index(inputs[i].name);
    all_indexed = index >= 0 && static_cast<size_t>(index) < n;
    if (all_indexed) position[i] = static_cast<size_t>(index);
  }
  if (all_indexed) {
    how = "index";
    return position;
  }
  how = "order";
  for (size_t i = 0; i < n; ++i) position[i] = i;
  return position;
}

// The tensors forward() returned, refusing what the Triton LibTorch backend refuses.
std::vector<torch::Tensor> output_tensors(const c10::IValue& result) {
  std::vector<torch::Tensor> outputs;
  if (result.isTensor()) {
    outputs.push_back(result.toTensor());
    return outputs;
  }
  if (result.isTuple()) {
    const auto& elements = result.toTupleRef().elements();
    for (size_t i = 0; i < elements.size(); ++i) {
      if (!elements[i].isTensor()) {
        throw Failure(6, "forward() returned a Tuple whose element " + std::to_string(i) + " is " +
                             elements[i].tagKind() + ", not a Tensor; the Triton LibTorch backend accepts only " +
                             "a Tensor or a Tuple of Tensors");
      }
      outputs.push_back(elements[i].toTensor());
    }
    return outputs;
  }
  throw Failure(6, "forward() returned " + result.tagKind() + " (Expected Tuple but got " + result.tagKind() +
                       "); the Triton LibTorch backend accepts only a Tensor or a Tuple of Tensors, so it would " +
                       "refuse this model. Return the embedding tensor (or a tuple of tensors) instead of a " +
                       "dict, list or scalar");
}

void write_tensor(std::ostream& out, size_t index, const torch::Tensor& t) {
  const torch::Tensor f = t.detach().to(torch::kCPU).to(torch::kFloat32).contiguous();
  out << index << ' ' << c10::toString(t.scalar_type()) << ' ' << f.dim();
  for (int64_t d : f.sizes()) out << ' ' << d;
  out << '\n';
  out.write(static_cast<const char*>(f.data_ptr()), static_cast<std::streamsize>(f.numel() * sizeof(float)));
}

int run(const std::string& model_path, const std::string& input_path, const std::string& output_path) {
  if (!host_is_little_endian()) throw Failure(2, "this checker assumes a little-endian host");
  c10::InferenceMode guard;

  torch::jit::Module module;
  try {
    module = torch::jit::load(model_path);
  } catch (const std::exception& e) {
    throw Failure(3, "cannot load TorchScript module '" + model_path + "': " + e.what());
  }
  module.eval();
  const std::vector<std::string> arg_names = forward_argument_names(module);

  std::ifstream in(input_path, std::ios::binary);
  if (!in) throw Failure(2, "cannot open input file '" + input_path + "'");
  std::istringstream file_header(read_line(in, "the file header"));
  std::string magic;
  int version = 0;
  int64_t n_cases = -1;
  file_header >> magic >> version >> n_cases;
  if (magic != "teicheck-in" || version != 1 || n_cases < 0) {
    throw Failure(2, "'" + input_path + "' is not a teicheck-in version 1 file");
  }

  std::string matching = "order";
  std::vector<std::vector<torch::Tensor>> results;
  for (int64_t c = 0; c < n_cases; ++c) {
    std::istringstream case_header(read_line(in, "a case header"));
    std::string word;
    int64_t n_tensors = -1;
    case_header >> word >> n_tensors;
    if (word != "case" || n_tensors < 0) throw Failure(2, "bad case header: '" + case_header.str() + "'");
    std::vector<NamedTensor> inputs;
    for (int64_t i = 0; i < n_tensors; ++i) inputs.push_back(read_tensor(in));

    if (inputs.size() != arg_names.size()) {
      throw Failure(4, "forward() takes " + std::to_string(arg_names.size()) + " arguments but " +
                           std::to_string(inputs.size()) + " inputs were given; the Triton LibTorch backend " +
                           "needs exactly one config input per forward() argument");
    }
    const std::vector<size_t> position = match_inputs(inputs, arg_names, matching);
    std::vector<c10::IValue> args(inputs.size());
    std::vector<bool> taken(inputs.size(), false);
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (taken[position[i]]) {
        throw Failure(4, "two inputs map to forward() argument " + std::to_string(position[i]) + " ('" +
                             arg_names[position[i]] + "')");
      }
      taken[position[i]] = true;
      args[position[i]] = inputs[i].tensor;
    }

    c10::IValue result;
    try {
      result = module.forward(args);
    } catch (const std::exception& e) {
      throw Failure(5, "forward() failed on case " + std::to_string(c) + ": " + e.what());
    }
    results.push_back(output_tensors(result));
  }

  std::ofstream out(output_path, std::ios::binary | std::ios::trunc);
  if (!out) throw Failure(2, "cannot write output file '" + output_path + "'");
  out << "teicheck-out 1 " << results.size() << ' ' << matching << '\n';
  for (const auto& outputs : results) {
    out << "case " << outputs.size() << '\n';
    for (size_t i = 0; i < outputs.size(); ++i) write_tensor(out, i, outputs[i]);
  }
  out.close();
  if (!out) throw Failure(2, "failed writing output file '" + output_path + "'");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: " << argv[0] << " MODEL_PT INPUT_FILE OUTPUT_FILE\n";
    return 2;
  }
  try {
    return run(argv[1], argv[2], argv[3]);
  } catch (const Failure& f) {
    std::cerr << "libtorch_check: " << f.what() << '\n';
    return f.code;
  } catch (const std::exception& e) {
    std::cerr << "libtorch_check: " << e.what() << '\n';
    return 1;
  }
}
