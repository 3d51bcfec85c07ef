"""Export of a finished model (kd_jax/models/export.py, scripts/export.py): Hugging Face directories and GGUF files that
kd_jax's own from_pretrained reads back bitwise, from fixture checkpoints and fabricated finished workdirs (no
training).

transformers' and peft's PyTorch models load the same exports with outputs within 1e-5 of kd_jax's: that check needs
torch and runs outside the tests (scripts/check_export_with_transformers.py; docs/export.md quotes it). llama.cpp's
greedy tokens on a GGUF export are compared with kd_jax's here, where llama-cpp-python is found (else skipped).
"""

import dataclasses
import os
import pathlib
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from kd_jax import files
from kd_jax.config import schema
from kd_jax.errors import UserError
from kd_jax.models import export, peft
from kd_jax.models.hf import from_teacher, gguf, pretrained
from kd_jax.training import checkpointing
from tests import helpers

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "hf"
LORA = ml_collections.ConfigDict({"rank": 2, "alpha": 8.0, "dropout": 0.0, "target_modules": None})


def moved(params, seed: int):
  """`params` plus seeded noise (NumPy: no compilation per shape), a stand-in for trained parameters that differ
  from the checkpoint's."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda leaf: np.asarray(leaf) + (0.02 * rng.standard_normal(np.shape(leaf))).astype(leaf.dtype),
                      params)


def fixture_model(name: str, task: str, seed: int = 0, layers=None, param_dtype="float32") -> export.Trained:
  _, params = pretrained.from_pretrained(str(FIXTURES / name), task, param_dtype=param_dtype)
  if layers is not None:
    params = from_teacher.select_layers(params, layers, jnp.dtype(param_dtype))
  return export.Trained(str(FIXTURES / name), task, moved(params, seed), layers=layers)


def assert_bitwise_equal(ours, theirs):
  flat_ours = jax.tree_util.tree_flatten_with_path(ours)[0]
  flat_theirs = jax.tree_util.tree_flatten_with_path(theirs)[0]
  assert [path for path, _ in flat_ours] == [path for path, _ in flat_theirs]
  for (path, a), (_, b) in zip(flat_ours, flat_theirs):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and np.array_equal(a.view(np.uint8), b.view(np.uint8)), jax.tree_util.keystr(path)


@pytest.mark.parametrize("name, task, layers, class_name", [
    ("bert", "sequence_classification", None, "BertForSequenceClassification"),
    ("distilbert", "sequence_classification", None, "DistilBertForSequenceClassification"),
    ("roberta", "sequence_classification", (1,), "RobertaForSequenceClassification"),
    ("t5_v1_1", "seq2seq", None, "T5ForConditionalGeneration"), ("llama", "causal_lm", None, "LlamaForCausalLM"),
    ("mistral", "causal_lm", None, "MistralForCausalLM"), ("qwen2", "causal_lm", (1,), "Qwen2ForCausalLM"),
    ("qwen3", "causal_lm", None, "Qwen3ForCausalLM"), ("gpt2", "causal_lm", (1,), "GPT2LMHeadModel"),
])
def test_hf_export_loads_back_bitwise(tmp_path, name, task, layers, class_name):
  trained = fixture_model(name, task, layers=layers)
  written = export.write(trained, "hf", str(tmp_path / "out"))
  assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(written)
  assert ("generation_config.json" in written) == (task != "sequence_classification")
  assert files.read_json(str(tmp_path / "out" / "config.json"))["architectures"] == [class_name]
  module, params = pretrained.from_pretrained(str(tmp_path / "out"), task)
  assert_bitwise_equal(trained.params, params)
  if layers is not None:  # the student's module, as from_teacher.create builds it from the teacher's
    dims = pretrained.from_pretrained(str(FIXTURES / name), task)[0].dims
    depth = {"num_layers": len(layers)}
    if hasattr(dims, "sliding_windows"):
      depth["sliding_windows"] = tuple(dims.sliding_windows[index] for index in layers)
    assert module.dims == dataclasses.replace(dims, **depth)


def test_gpt2_export_writes_the_fused_c_attn_in_the_checkpoints_order(tmp_path):
  """kd_jax holds GPT-2's c_attn heads first (tensor parallelism: gpt2.heads_first); the export writes the
  checkpoint's (q, k, v) order back: unchanged parameters give the source's tensors exactly."""
  import safetensors.numpy  # pylint: disable=import-outside-toplevel
  _, params = pretrained.from_pretrained(str(FIXTURES / "gpt2"), "causal_lm")
  export.write(export.Trained(str(FIXTURES / "gpt2"), "causal_lm", params), "hf", str(tmp_path / "out"))
  exported = safetensors.numpy.load_file(str(tmp_path / "out" / "model.safetensors"))
  source = safetensors.numpy.load_file(str(FIXTURES / "gpt2" / "model.safetensors"))
  for name in ("transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_attn.bias"):
    np.testing.assert_array_equal(exported[name], source[name], err_msg=name)


def test_bfloat16_parameters_export_in_bfloat16(tmp_path):
  trained = fixture_model("distilbert", "sequence_classification", param_dtype="bfloat16")
  export.write(trained, "hf", str(tmp_path / "out"))
  assert files.read_json(str(tmp_path / "out" / "config.json"))["dtype"] == "bfloat16"
  _, params = pretrained.from_pretrained(str(tmp_path / "out"), param_dtype="bfloat16")
  assert_bitwise_equal(trained.params, params)


@pytest.mark.parametrize("name, layers, architecture", [
    ("llama_chat_small", None, "llama"), ("qwen3", None, "qwen3"),
    ("qwen2", (0,), "qwen2"),  # the fixture's layer 0 attends fully (layer 1 through a window GGUF cannot record)
])
def test_gguf_float32_export_loads_back_bitwise_with_its_tokenizer(tmp_path, name, layers, architecture):
  trained = fixture_model(name, "causal_lm", layers=layers)
  assert export.write(trained, "gguf", str(tmp_path / "out")) == ["model.gguf"]
  path = str(tmp_path / "out" / "model.gguf")
  _, params = pretrained.from_pretrained(path, "causal_lm")
  assert_bitwise_equal(trained.params, params)
  source, exported = pretrained.load_tokenizer(trained.source), pretrained.load_tokenizer(path)
  # transformers' GGUF tokenizer builder appends '<|endoftext|>' to a byte-level vocabulary without it (qwen3's).
  assert {token: index for token, index in exported.get_vocab().items() if token != "<|endoftext|>"} == {
      token: index for token, index in source.get_vocab().items() if token != "<|endoftext|>"}
  assert exported.chat_template == source.chat_template
  assert (exported.bos_token, exported.eos_token) == (source.bos_token, source.eos_token)
  metadata = gguf.read(path).metadata
  assert metadata["general.architecture"] == architecture
  assert metadata["general.file_type"] == 0 and metadata["tokenizer.ggml.model"] == "gpt2"


def test_a_student_of_a_gguf_teachers_layers_exports_to_hf(tmp_path):
  # As configs/causal_lm.py:smollm builds its student: layers of a GGUF teacher (here one exported from a fixture).
  export.write(fixture_model("llama_chat_small", "causal_lm"), "gguf", str(tmp_path / "teacher"))
  teacher_path = str(tmp_path / "teacher" / "model.gguf")
  _, teacher_params = pretrained.from_pretrained(teacher_path, "causal_lm")
  trained = export.Trained(teacher_path, "causal_lm", moved(from_teacher.select_layers(teacher_params, (1,),
                                                                                        jnp.float32), 5), layers=(1,))
  export.write(trained, "hf", str(tmp_path / "student"))
  module, params = pretrained.from_pretrained(str(tmp_path / "student"), "causal_lm")
  assert module.dims.num_layers == 1
  assert_bitwise_equal(trained.params, params)
  assert pretrained.load_tokenizer(str(tmp_path / "student")).get_vocab() == pretrained.load_tokenizer(
      teacher_path).get_vocab()


@pytest.mark.parametrize("gguf_type, tolerance", [("f16", 1e-3), ("q8_0", 1e-2)])
def test_gguf_half_and_q8_0_exports_are_close(tmp_path, gguf_type, tolerance):
  trained = fixture_model("llama_chat_small", "causal_lm")
  export.write(trained, "gguf", str(tmp_path / "out"), gguf_type=gguf_type)
  _, params = pretrained.from_pretrained(str(tmp_path / "out" / "model.gguf"), "causal_lm")
  for ours, theirs in zip(jax.tree.leaves(trained.params), jax.tree.leaves(params)):
    np.testing.assert_allclose(theirs, ours, atol=tolerance * np.abs(ours).max())


def test_gguf_q_and_k_row_permutation_is_the_inverse_of_the_readers():
  weight = np.arange(4 * 8 * 3, dtype=np.float32).reshape(4 * 8, 3)
  permuted = gguf.permute_rows(weight, 4)
  assert not np.array_equal(permuted, weight)
  np.testing.assert_array_equal(gguf.unpermute_rows(permuted, 4), weight)
  for name in ("model.layers.3.self_attn.q_proj.weight", "model.norm.weight", "lm_head.weight"):
    assert gguf.hf_tensor_name(gguf.gguf_tensor_name(name)) == name


def lora_trained(params, seed: int):
  """`params` with LoRA adapters and head as if trained (moved); the base as the checkpoint's, as LoRA keeps it."""
  adapted = peft.add_adapters(params, LORA, jax.random.key(seed))
  trained = peft.Trainable((peft.ADAPTER_PATTERN, peft.HEAD_PATTERN)).labels(adapted)
  return jax.tree.map(lambda leaf, moved_leaf, label: moved_leaf if label == "train" else np.asarray(leaf), adapted,
                      moved(adapted, seed), trained)


def test_lora_adapter_export_holds_peft_names_and_layouts(tmp_path):
  _, params = pretrained.from_pretrained(str(FIXTURES / "distilbert"))
  adapted = lora_trained(params, 1)
  trained = export.Trained(str(FIXTURES / "distilbert"), "sequence_classification", adapted, lora=LORA)
  assert export.write(trained, "hf", str(tmp_path / "adapter"), lora="adapter")[:2] == [
      "adapter_config.json", "adapter_model.safetensors"]
  config = files.read_json(str(tmp_path / "adapter" / "adapter_config.json"))
  assert (config["r"], config["lora_alpha"], config["task_type"]) == (2, 8.0, "SEQ_CLS")
  assert config["modules_to_save"] == ["classifier", "pre_classifier"]
  import safetensors.numpy  # pylint: disable=import-outside-toplevel
  tensors = safetensors.numpy.load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
  q_lin = adapted["distilbert"]["transformer.layer.0"]["attention.q_lin"]
  prefix = "base_model.model.distilbert.transformer.layer.0.attention.q_lin"
  np.testing.assert_array_equal(tensors[f"{prefix}.lora_A.weight"], q_lin["lora_a"].T)
  np.testing.assert_array_equal(tensors[f"{prefix}.lora_B.weight"], q_lin["lora_b"].T)
  np.testing.assert_array_equal(tensors["base_model.model.classifier.weight"], adapted["classifier"]["kernel"].T)
  assert len(tensors) == 4 * len(config["target_modules"]) // 2 + 4

  export.write(trained, "hf", str(tmp_path / "merged"))
  _, merged = pretrained.from_pretrained(str(tmp_path / "merged"))
  assert_bitwise_equal(jax.device_get(peft.merge(adapted, LORA.alpha / LORA.rank)), merged)

  # A base parameter that trained (or that the checkpoint lacks) is not in what transformers loads under the adapter.
  adapted["distilbert"]["embeddings.LayerNorm"]["scale"] = adapted["distilbert"]["embeddings.LayerNorm"]["scale"] + 1
  with pytest.raises(UserError, match="parameter distilbert/embeddings.LayerNorm/scale differs from .*--lora=merge"):
    export.write(trained, "hf", str(tmp_path / "refused"), lora="adapter")
  assert not (tmp_path / "refused").exists()


def test_lora_adapter_of_a_causal_lm_has_no_modules_to_save(tmp_path):
  lora = ml_collections.ConfigDict({**LORA.to_dict(), "target_modules": ("q_proj", "v_proj")})
  _, params = pretrained.from_pretrained(str(FIXTURES / "llama"), "causal_lm")
  adapted = peft.add_adapters(params, lora, jax.random.key(0))
  trained = export.Trained(str(FIXTURES / "llama"), "causal_lm", adapted, lora=lora)
  export.write(trained, "hf", str(tmp_path / "adapter"), lora="adapter")
  config = files.read_json(str(tmp_path / "adapter" / "adapter_config.json"))
  assert (config["task_type"], config["modules_to_save"]) == ("CAUSAL_LM", None)
  targets = [f"model.layers.{i}.self_attn.{name}" for i in (0, 1) for name in ("q_proj", "v_proj")]
  assert config["target_modules"] == targets


def test_lora_adapter_of_gpt2_holds_c_attn_in_the_checkpoints_order(tmp_path):
  """GPT-2's default target is its fused c_attn (a Conv1D, which peft adapts with fan_in_fan_out); kd_jax holds its
  output units heads-first, so the adapter's lora_B is written back in the checkpoint's (q, k, v) order, as the
  weight is: B A added to the checkpoint's weight is the merged export's weight."""
  _, params = pretrained.from_pretrained(str(FIXTURES / "gpt2"), "causal_lm")
  adapted = lora_trained(params, 2)
  trained = export.Trained(str(FIXTURES / "gpt2"), "causal_lm", adapted, lora=LORA)
  export.write(trained, "hf", str(tmp_path / "adapter"), lora="adapter")
  export.write(trained, "hf", str(tmp_path / "merged"))
  config = files.read_json(str(tmp_path / "adapter" / "adapter_config.json"))
  assert config["target_modules"] == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]
  assert config["fan_in_fan_out"]
  import safetensors.numpy  # pylint: disable=import-outside-toplevel
  adapter = safetensors.numpy.load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
  base = safetensors.numpy.load_file(str(FIXTURES / "gpt2" / "model.safetensors"))
  merged = safetensors.numpy.load_file(str(tmp_path / "merged" / "model.safetensors"))
  name = "transformer.h.0.attn.c_attn"
  update = adapter[f"base_model.model.{name}.lora_A.weight"].T @ adapter[f"base_model.model.{name}.lora_B.weight"].T
  np.testing.assert_allclose(base[f"{name}.weight"] + LORA.alpha / LORA.rank * update, merged[f"{name}.weight"],
                             rtol=1e-5, atol=1e-6)


# Finished workdirs, fabricated: config.json, results.json and a checkpoint of the student's state, as runs leave them.


def finished_run(workdir: pathlib.Path, params, *, student_checkpoint="distilbert", select="last", lora_rank=0,
                 name="hf", phase: str | None = "student") -> pathlib.Path:
  config = schema.default_config()
  config.student.name = name
  config.student.checkpoint = str(FIXTURES / student_checkpoint)
  config.student.task = "sequence_classification"
  config.student.lora.rank = lora_rank
  config.train.select = select
  workdir.mkdir(parents=True)
  files.write_json(str(workdir / "config.json"), config.to_dict())
  files.write_json(str(workdir / "results.json"), {})
  if phase is None:  # a point of a vectorized sweep: its checkpoints are its group's
    return workdir
  if select == "last":
    store = checkpointing.CheckpointStore(str(workdir / "checkpoints" / phase), max_to_keep=2)
    store.save(7, {"params": params, "opt_state": jax.tree.map(jnp.zeros_like, params), "step": jnp.int32(7)})
    store.close()
  else:
    best = workdir / "checkpoints" / "student_best"
    checkpointing.save_params(str(best / "best-3"), params)
    files.write_json(str(best / "best.json"), {"directory": "best-3", "steps": [3], "values": [0.5]})
  return workdir


@pytest.fixture(scope="module")
def export_script():
  return helpers.load_script("export")


@pytest.fixture(scope="module")
def student_params():
  return moved(pretrained.from_pretrained(str(FIXTURES / "distilbert"))[1], 3)


def test_script_exports_a_finished_runs_student(tmp_path, export_script, student_params, capsys):
  # The feature projections that trained beside the model are left out.
  workdir = finished_run(tmp_path / "run", {"model": student_params, "feature_projections": {"0": {"kernel": np.ones(
      (2, 2), np.float32)}}})
  argv = [f"--workdir={workdir}", "--model=student", "--format=hf", f"--out={tmp_path / 'out'}"]
  assert export_script.main(argv) == 0
  assert "wrote" in capsys.readouterr().out
  assert_bitwise_equal(student_params, pretrained.from_pretrained(str(tmp_path / "out"))[1])


def test_the_hard_label_student_and_a_teacher_trained_in_the_run_are_exported(tmp_path, student_params):
  workdir = finished_run(tmp_path / "run", student_params, phase="student_hard")
  export.export(str(workdir), model="student_hard", export_format="hf", out=str(tmp_path / "hard"))
  assert_bitwise_equal(student_params, pretrained.from_pretrained(str(tmp_path / "hard"))[1])

  teacher_params = moved(pretrained.from_pretrained(str(FIXTURES / "roberta"))[1], 6)
  config = files.read_json(str(workdir / "config.json"))
  config["teacher"].update(name="hf", checkpoint=str(FIXTURES / "roberta"), init="train")
  files.write_json(str(workdir / "config.json"), config)
  checkpointing.save_params(str(workdir / "teacher" / "params"), teacher_params)
  export.export(str(workdir), model="teacher", export_format="hf", out=str(tmp_path / "teacher"))
  assert_bitwise_equal(teacher_params, pretrained.from_pretrained(str(tmp_path / "teacher"))[1])


def test_a_point_of_a_vectorized_sweep_exports_its_slice_of_the_stacked_checkpoints(tmp_path, student_params):
  from kd_jax.training import vectorized  # pylint: disable=import-outside-toplevel
  sweep = tmp_path / "sweep"
  # Points differing in their seed (a vectorized field): one group, one hard-label student per seed.
  names = ["seed=0", "seed=1"]
  for seed, name in enumerate(names):
    finished_run(sweep / name, student_params, phase=None)
    config = files.read_json(str(sweep / name / "config.json"))
    config["seed"] = seed
    files.write_json(str(sweep / name / "config.json"), config)
  files.write_json(str(sweep / "sweep.json"), {"points": [{"name": name} for name in names]})
  group = pathlib.Path(vectorized.group_directory([str(sweep / name) for name in names]))
  per_point = {phase: [moved(student_params, 10 * i + j) for j in range(2)]
               for i, phase in enumerate(("student", "student_hard"))}
  for phase, params in per_point.items():
    store = checkpointing.CheckpointStore(str(group / phase), max_to_keep=1)
    store.save(7, {"params": jax.tree.map(lambda *leaves: np.stack(leaves), *params), "step": jnp.int32(7)})
    store.close()
  for phase, params in per_point.items():
    export.export(str(sweep / "seed=1"), model=phase, export_format="hf", out=str(tmp_path / phase))
    assert_bitwise_equal(params[1], pretrained.from_pretrained(str(tmp_path / phase))[1])


def test_best_validation_parameters_and_merged_lora_adapters_are_exported(tmp_path, student_params):
  adapted = lora_trained(student_params, 4)
  workdir = finished_run(tmp_path / "run", adapted, select="best_validation", lora_rank=LORA.rank)
  export.export(str(workdir), model="student", export_format="hf", out=str(tmp_path / "out"))
  assert_bitwise_equal(jax.device_get(peft.merge(adapted, LORA.alpha / LORA.rank)),
                       pretrained.from_pretrained(str(tmp_path / "out"))[1])


def test_out_is_replaced_only_with_overwrite_and_a_failed_export_leaves_nothing(tmp_path, student_params,
                                                                               monkeypatch):
  workdir = finished_run(tmp_path / "run", student_params)
  out = tmp_path / "exports" / "out"
  out.mkdir(parents=True)
  (out / "old.txt").write_text("kept")
  with pytest.raises(UserError, match="exists and is not an empty directory"):
    export.export(str(workdir), model="student", export_format="hf", out=str(out))
  export.export(str(workdir), model="student", export_format="hf", out=str(out), overwrite=True)
  assert not (out / "old.txt").exists() and (out / "model.safetensors").exists()
  assert sorted(os.listdir(out.parent)) == ["out"]

  def fails_halfway(trained, family, config, directory):
    del trained, family, config
    (pathlib.Path(directory) / "config.json").write_text("{}")
    raise UserError("the tokenizer could not be read")

  monkeypatch.setattr(export, "write_hf", fails_halfway)
  with pytest.raises(UserError, match="tokenizer"):
    export.export(str(workdir), model="student", export_format="hf", out=str(tmp_path / "exports" / "new"))
  with pytest.raises(UserError, match="tokenizer"):  # the directories it would have created above --out go too
    export.export(str(workdir), model="student", export_format="hf", out=str(tmp_path / "exports" / "a" / "b" / "c"))
  assert sorted(os.listdir(out.parent)) == ["out"]


@pytest.mark.parametrize("edit, argv, message", [
    (None, ["--model=student", "--format=onnx"], "--format=onnx: not one of hf, gguf"),
    (None, ["--model=pupil", "--format=hf"], "--model=pupil: not one of student, student_hard, teacher"),
    (None, ["--model=student", "--format=gguf"],
     "--format=gguf: not supported for .*distilbert: model_type 'distilbert' is not one of llama, mistral, qwen2, "
     "qwen3; supported pairs: hf for bert, "),
    (None, ["--model=student", "--format=hf", "--lora=adapter"], "--lora=adapter: the model trained no LoRA"),
    ("unfinished", ["--model=student", "--format=hf"], "the run has not finished \\(no results.json\\)"),
    ("mlp", ["--model=student", "--format=hf"],
     "--format=hf: not supported for config.student.name='mlp'; supported pairs: params for the models that are not "
     "Hugging Face ones"),
    ("no_config", ["--model=student", "--format=hf"], "no config.json, so no run of kd_jax is there"),
    (None, ["--model=teacher", "--format=hf"], "--model=teacher: .*teacher/params is missing"),
])
def test_bad_input_is_one_line_with_exit_status_2_and_writes_nothing(tmp_path, export_script, student_params, capsys,
                                                                    edit, argv, message):
  workdir = finished_run(tmp_path / "run", student_params, name="mlp" if edit == "mlp" else "hf")
  if edit == "unfinished":
    os.remove(workdir / "results.json")
  if edit == "no_config":
    os.remove(workdir / "config.json")
  config = files.read_json(str(workdir / "config.json")) if edit != "no_config" else None
  if config is not None and "--model=teacher" in argv:  # a teacher trained in the run whose training did not finish
    config["teacher"].update(name="hf", checkpoint=str(FIXTURES / "roberta"), init="train")
    files.write_json(str(workdir / "config.json"), config)
  assert export_script.main([f"--workdir={workdir}", *argv, f"--out={tmp_path / 'out'}"]) == 2
  stderr = capsys.readouterr().err.strip()
  assert len(stderr.splitlines()) == 1 and stderr.startswith("error: ")
  assert re.search(message, stderr), stderr
  assert sorted(os.listdir(tmp_path)) == ["run"]


def test_gguf_export_of_llama3_rope_writes_llama_cpps_rope_freqs_and_loads_back(tmp_path):
  """Llama 3.1's RoPE scaling is written as llama.cpp's converter writes it (rope_freqs.weight); the file reads back
  with the checkpoint's weights and RoPE frequencies (its logits: test_gguf_rope_freqs_divide_the_frequencies_as_
  llama_cpp), and exports again with the same rope_freqs."""
  checkpoint = helpers.llama31_checkpoint(tmp_path)
  model, params = pretrained.from_pretrained(str(checkpoint), "causal_lm")
  export.write(export.Trained(str(checkpoint), "causal_lm", params), "gguf", str(tmp_path / "out"))
  path = str(tmp_path / "out" / "model.gguf")
  read_rope_freqs = lambda path: np.asarray(gguf.read(path).tensors["rope_freqs.weight"].data).view(np.float32)
  rope_freqs = read_rope_freqs(path).reshape(-1)
  np.testing.assert_array_equal(rope_freqs, helpers.llama_cpp_rope_freqs(helpers.LLAMA31_ROPE, 8))
  loaded, loaded_params = pretrained.from_pretrained(path, "causal_lm")
  assert_bitwise_equal(params, loaded_params)
  np.testing.assert_allclose(loaded.dims.rope.inverse_frequencies(0), model.dims.rope.inverse_frequencies(0),
                             rtol=1e-6)
  export.write(export.Trained(path, "causal_lm", loaded_params), "gguf", str(tmp_path / "again"))
  np.testing.assert_array_equal(read_rope_freqs(str(tmp_path / "again" / "model.gguf")).reshape(-1), rope_freqs)


def test_gguf_refuses_llama_models_its_architecture_cannot_express(tmp_path):
  for name, reason in (("llama", "attention_bias=True"), ("mistral", "sliding window"), ("qwen2", "sliding window")):
    trained = export.Trained(str(FIXTURES / name), "causal_lm", {})
    with pytest.raises(UserError, match=reason):
      export.write(trained, "gguf", str(tmp_path / "out"))
  assert not os.listdir(tmp_path)


@pytest.mark.slow
def test_a_users_causal_lm_exports_with_its_tokenizer_and_answers_in_chat_py(tmp_path, capsys):
  """--format=params of configs/custom_lm.py:smoke's NNX student carries the tokenizer it trained with (the teacher's)
  and its stop tokens; scripts/chat.py loads the export and answers greedily, token for token what the model gives
  called on each growing prefix of the chat-templated prompt, up to the first stop token."""
  from kd_jax import data, models  # pylint: disable=import-outside-toplevel
  from kd_jax.data import causal_lm  # pylint: disable=import-outside-toplevel
  from kd_jax.data.examples import first_inputs  # pylint: disable=import-outside-toplevel
  config = helpers.load_config("configs/custom_lm.py")
  task = data.load_task(config)
  model, params = models.create_student(config.student, num_classes=task.num_classes,
                                        example_inputs=first_inputs(task.train.inputs), rng=jax.random.PRNGKey(0))
  params = moved(params, 5)
  out = str(tmp_path / "exported")
  written = export.write(export.Trained(None, "causal_lm", params, run_config=config), "params", out)
  assert {"tokenizer.json", "tokenizer_config.json", export.MODEL_FILE, export.SAFETENSORS_FILE} <= set(written)
  teacher_tokenizer = pretrained.load_tokenizer(config.teacher.checkpoint)
  tokenizer = pretrained.load_tokenizer(out)
  assert tokenizer.get_vocab() == teacher_tokenizer.get_vocab()
  assert tokenizer.chat_template == teacher_tokenizer.chat_template
  eos = export.exported_stop_token_ids(out)
  assert eos == causal_lm.stop_token_ids(teacher_tokenizer, (config.teacher.checkpoint,))

  message, max_new_tokens = "What color is the snow?", 6
  tokens = helpers.load_script("chat").main([f"--checkpoint={out}", f"--message={message}",
                                     f"--max_new_tokens={max_new_tokens}"])
  sequence = list(tokenizer.apply_chat_template([{"role": "user", "content": message}], add_generation_prompt=True,
                                                return_dict=True)["input_ids"])
  expected, apply = [], jax.jit(lambda p, ids: model.apply({"params": p}, {"input_ids": ids,
                                                                         "attention_mask": jnp.ones_like(ids)}))
  while len(expected) < max_new_tokens and not (expected and expected[-1] in eos):
    expected.append(int(np.argmax(np.asarray(apply(params, np.array([sequence], np.int32)))[0, -1])))
    sequence.append(expected[-1])
  assert list(tokens[:len(expected)]) == expected
  assert f"answer: {tokenizer.decode(tokens, skip_special_tokens=True)!r}" in capsys.readouterr().out
  with pytest.raises(UserError, match="not a causal LM exported with --format=params"):
    export.exported_stop_token_ids(str(FIXTURES / "llama"))


@pytest.mark.slow
def test_llama_cpp_runs_a_float32_gguf_export_with_kd_jaxs_greedy_tokens(tmp_path, capsys):
  """The chat fixture Llama, parameters moved far off the fixture's (so that greedy decoding does not repeat one
  token), exported to float32 GGUF: llama.cpp (llama-cpp-python in its own environment) decodes the chat-templated
  prompt to the same 12 greedy tokens as kd_jax (scripts/check_gguf_with_llama_cpp.py)."""
  llama_python = helpers.llama_cpp_python()
  if llama_python is None:
    pytest.skip("llama-cpp-python is not installed (set KD_JAX_LLAMA_PYTHON to an environment that has it, or make "
                ".llamaenv: docs/tests.md)")
  _, params = pretrained.from_pretrained(str(FIXTURES / "llama_chat_small"), "causal_lm")
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda leaf: np.asarray(leaf) + (0.3 * rng.standard_normal(np.shape(leaf))).astype(leaf.dtype),
                        params)
  export.write(export.Trained(str(FIXTURES / "llama_chat_small"), "causal_lm", params), "gguf", str(tmp_path / "out"))
  script = helpers.load_script("check_gguf_with_llama_cpp")
  assert script.check(str(tmp_path / "out" / export.GGUF_FILE), "What color is the snow?", 12, llama_python)
  printed = capsys.readouterr().out
  tokens = re.search(r"kd_jax +greedy tokens \[(.*)\]", printed).group(1).split(", ")
  assert len(tokens) == 12 and len(set(tokens)) > 4, printed  # not one token repeated
