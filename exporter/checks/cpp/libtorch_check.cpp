// libtorch_check: run an exported model through LibTorch alone, the way Triton's pytorch backend does.
//
// Usage: libtorch_check [--pt2] MODEL INPUT_FILE OUTPUT_FILE
//
// Two kinds of MODEL, both run under c10::InferenceMode (the backend's default):
// * a TorchScript model.pt (platform "pytorch_libtorch"): loaded with torch::jit::load; the named inputs are mapped
//   onto forward()'s arguments with the backend's rules and forward() is called once per case;
// * with --pt2, or when MODEL ends in ".pt2", an AOTInductor package model.pt2 (platform "torch_aoti"): loaded with
//   torch::inductor::AOTIModelPackageLoader(MODEL, "model", false, 1, -1) as the backend does on CPU; every input
//   must be named INPUT__<n> and goes to the package as its n-th input, and run() is called once per case.
// Every output is written as float32. Built and driven by exporter/libtorch_check.py, which also writes and reads
// the two files.
//
// Input file (all integers in decimal ASCII, data raw little-endian, rows in C order):
//   "teicheck-in 1 <n_cases>\n"
//   per case:   "case <n_tensors>\n"
//   per tensor: "<name> <dtype> <ndim> <d0> ... <dn-1>\n" then the raw bytes; dtype is int64, int32 or float32;
//               or dtype bytes (ndim 1, d0 strings), each string as "<byte length>\n" then its raw bytes: a
//               TYPE_STRING input, passed to forward() as one torch::List<std::string>, as NVIDIA's backend does
//               (r24.10 src/libtorch.cc SetStringInputTensor); the bytes are not decoded (invalid UTF-8 stays).
// Tensors appear in the order Triton would list them (the config.pbtxt input order).
//
// Output file:
//   "teicheck-out 1 <n_cases> <matching>\n"   matching: name | index | order (how inputs met the model's arguments;
//                                              always index, by the INPUT__<n> ordinal, for a .pt2 package)
//   per case:   "case <n_outputs>\n"
//   per output: "<index> <original dtype> <ndim> <d0> ... <dn-1>\n" then the data as raw little-endian float32.
//
// Exit status: 0 ok; 2 usage or file error; 3 the module (package) cannot be loaded; 4 the inputs do not fit
// forward() (the package); 5 forward() (the package's run()) failed; 6 forward() returned a type the Triton LibTorch
// backend refuses. The reason is on stderr.

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/script.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
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
  c10::IValue value;  // a Tensor, or for a bytes input a List[str]
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
  if (dtype == "bytes") {
    if (ndim != 1) throw Failure(2, "bytes input '" + name + "' must be 1-D (a list of strings), as Triton passes it");
    torch::List<std::string> strings;
    strings.reserve(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) {
      std::istringstream length_line(read_line(in, "a string length"));
      int64_t length = -1;
      if (!(length_line >> length) || length < 0) throw Failure(2, "bad string length in '" + name + "'");
      std::string value(static_cast<size_t>(length), '\0');
      if (length > 0 && !in.read(&value[0], static_cast<std::streamsize>(length))) {
        throw Failure(2, "input file ended inside string " + std::to_string(i) + " of '" + name + "'");
      }
      strings.push_back(value);
    }
    return {name, c10::IValue(strings)};
  }
  torch::ScalarType type;
  if (dtype == "int64") {
    type = torch::kInt64;
  } else if (dtype == "int32") {
    type = torch::kInt32;
  } else if (dtype == "float32") {
    type = torch::kFloat32;
  } else {
    throw Failure(2, "input '" + name + "' has dtype '" + dtype + "'; expected int64, int32, float32 or bytes");
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

// What went wrong, without the C++ backtrace c10::Error carries.
std::string reason(const std::exception& e) {
  const auto* error = dynamic_cast<const c10::Error*>(&e);
  return error ? error->what_without_backtrace() : e.what();
}

// A loaded model that runs one case at a time; `how` says how the inputs met its arguments.
class Model {
 public:
  virtual ~Model() = default;
  virtual std::vector<torch::Tensor> run(const std::vector<NamedTensor>& inputs, int64_t case_no,
                                         std::string& how) = 0;
};

// A TorchScript module: torch::jit::load, then forward() with the inputs matched as the LibTorch backend does.
class TorchScriptModel : public Model {
 public:
  explicit TorchScriptModel(const std::string& path) {
    try {
      module_ = torch::jit::load(path);
    } catch (const std::exception& e) {
      throw Failure(3, "cannot load TorchScript module '" + path + "': " + e.what());
    }
    module_.eval();
    arg_names_ = forward_argument_names(module_);
  }

  std::vector<torch::Tensor> run(const std::vector<NamedTensor>& inputs, int64_t case_no, std::string& how) override {
    if (inputs.size() != arg_names_.size()) {
      throw Failure(4, "forward() takes " + std::to_string(arg_names_.size()) + " arguments but " +
                           std::to_string(inputs.size()) + " inputs were given; the Triton LibTorch backend " +
                           "needs exactly one config input per forward() argument");
    }
    const std::vector<size_t> position = match_inputs(inputs, arg_names_, how);
    std::vector<c10::IValue> args(inputs.size());
    std::vector<bool> taken(inputs.size(), false);
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (taken[position[i]]) {
        throw Failure(4, "two inputs map to forward() argument " + std::to_string(position[i]) + " ('" +
                             arg_names_[position[i]] + "')");
      }
      taken[position[i]] = true;
      args[position[i]] = inputs[i].value;
    }

    c10::IValue result;
    try {
      result = module_.forward(args);
    } catch (const std::exception& e) {
      throw Failure(5, "forward() failed on case " + std::to_string(case_no) + ": " + e.what());
    }
    return output_tensors(result);
  }

 private:
  torch::jit::Module module_;
  std::vector<std::string> arg_names_;
};

// n of an `INPUT__<n>` name, or -1 for any other name.
long input_ordinal(const std::string& name) {
  static const std::string prefix = "INPUT__";
  if (name.size() <= prefix.size() || name.size() > prefix.size() + 9 || name.compare(0, prefix.size(), prefix) != 0) {
    return -1;
  }
  long n = 0;
  for (size_t i = prefix.size(); i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    n = n * 10 + (name[i] - '0');
  }
  return n;
}

// How many tensors a serialized pytree spec (the package's call spec) flattens to: its leaves, written as
// {"type": null, ...}; 0 when the spec has none (then the package's own check is relied on).
size_t pytree_leaves(const std::string& spec) {
  size_t count = 0;
  for (size_t at = spec.find("\"type\": null"); at != std::string::npos; at = spec.find("\"type\": null", at + 1)) {
    ++count;
  }
  return count;
}

// An AOTInductor package: loaded and run as Triton's torch_aoti platform does, the inputs ordered by ordinal.
class Pt2Model : public Model {
 public:
  explicit Pt2Model(const std::string& path) {
    try {
      loader_ = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path, "model", /*run_single_threaded=*/false,
                                                                          /*num_runners=*/1, /*device_index=*/-1);
      const std::vector<std::string> spec = loader_->get_call_spec();
      n_inputs_ = spec.empty() ? 0 : pytree_leaves(spec[0]);
    } catch (const std::exception& e) {
      throw Failure(3, "cannot load AOTInductor package '" + path + "': " + reason(e));
    }
  }

  std::vector<torch::Tensor> run(const std::vector<NamedTensor>& inputs, int64_t case_no, std::string& how) override {
    if (n_inputs_ != 0 && inputs.size() != n_inputs_) {
      throw Failure(4, "the package takes " + std::to_string(n_inputs_) + " inputs but " +
                           std::to_string(inputs.size()) + " were given; Triton's torch_aoti platform needs " +
                           "exactly one config input INPUT__<n> per package input");
    }
    std::vector<torch::Tensor> args(inputs.size());
    std::vector<bool> taken(inputs.size(), false);
    for (const auto& input : inputs) {
      const long n = input_ordinal(input.name);
      if (n < 0) {
        throw Failure(4, "input '" + input.name + "' is not named INPUT__<n>; Triton's torch_aoti platform " +
                             "passes the n-th package input from the config input INPUT__<n>");
      }
      if (static_cast<size_t>(n) >= inputs.size() || taken[static_cast<size_t>(n)]) {
        throw Failure(4, "input '" + input.name + "' " +
                             (static_cast<size_t>(n) >= inputs.size() ? "is out of range for "
                                                                      : "repeats an ordinal among ") +
                             std::to_string(inputs.size()) + " inputs; the ordinals must be 0.." +
                             std::to_string(inputs.size() - 1) + ", each once");
      }
      if (!input.value.isTensor()) {
        throw Failure(4, "input '" + input.name + "' is a list of strings; an AOTInductor package takes tensors only");
      }
      taken[static_cast<size_t>(n)] = true;
      args[static_cast<size_t>(n)] = input.value.toTensor();
    }
    how = "index";
    try {
      return loader_->run(args);
    } catch (const std::exception& e) {
      throw Failure(5, "the package's run() failed on case " + std::to_string(case_no) + ": " + reason(e));
    }
  }

 private:
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader_;
  size_t n_inputs_ = 0;
};

bool ends_with(const std::string& text, const std::string& tail) {
  return text.size() >= tail.size() && text.compare(text.size() - tail.size(), tail.size(), tail) == 0;
}

void write_tensor(std::ostream& out, size_t index, const torch::Tensor& t) {
  const torch::Tensor f = t.detach().to(torch::kCPU).to(torch::kFloat32).contiguous();
  out << index << ' ' << c10::toString(t.scalar_type()) << ' ' << f.dim();
  for (int64_t d : f.sizes()) out << ' ' << d;
  out << '\n';
  out.write(static_cast<const char*>(f.data_ptr()), static_cast<std::streamsize>(f.numel() * sizeof(float)));
}

int run(const std::string& model_path, bool pt2, const std::string& input_path, const std::string& output_path) {
  if (!host_is_little_endian()) throw Failure(2, "this checker assumes a little-endian host");
  c10::InferenceMode guard;

  std::unique_ptr<Model> model;
  if (pt2) {
    model = std::make_unique<Pt2Model>(model_path);
  } else {
    model = std::make_unique<TorchScriptModel>(model_path);
  }

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
    results.push_back(model->run(inputs, c, matching));
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
  const bool pt2_flag = argc == 5 && std::string(argv[1]) == "--pt2";
  if (argc != 4 && !pt2_flag) {
    std::cerr << "usage: " << argv[0] << " [--pt2] MODEL INPUT_FILE OUTPUT_FILE\n";
    return 2;
  }
  char** args = argv + (pt2_flag ? 2 : 1);
  try {
    return run(args[0], pt2_flag || ends_with(args[0], ".pt2"), args[1], args[2]);
  } catch (const Failure& f) {
    std::cerr << "libtorch_check: " << f.what() << '\n';
    return f.code;
  } catch (const std::exception& e) {
    std::cerr << "libtorch_check: " << e.what() << '\n';
    return 1;
  }
}
