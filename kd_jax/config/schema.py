"""The config schema: every field a kd_jax config may hold, its default and type, with a comment on each.

`default_config()` is the embedded default run (the digits task of configs/default.py); config files build on it and
change a few fields (configs/*.py). `validation.validate` rejects any field this schema lacks and any value of
another type. `OPERATIONAL_FIELDS` are those a resumed run may change.
"""

import ml_collections
from ml_collections import config_dict

# Fields a resumed run (or a sweep point's directory) may change: they affect logging, checkpoint cadence, placement
# and where the shared teacher is stored, not the result.
OPERATIONAL_FIELDS = frozenset({
    "train.log_every_steps", "train.eval_every_steps", "train.checkpoint_every_steps", "train.max_checkpoints_to_keep",
    "train.num_devices", "train.steps_per_dispatch", "train.device_data_max_mib", "data.eval_batch_size",
    "teacher.workdir", "train.microbatches", "train.remat", "mesh.data", "mesh.fsdp", "mesh.tensor", "mesh.rules"})
# The config.teacher fields an ensemble's members may set (config.ensemble.members): what changes a teacher's
# weights, not its kind, label space or inputs (name, checkpoint and task stay config.teacher's).
ENSEMBLE_MEMBER_FIELDS = ("seed", "init", "hidden_sizes", "dropout_rate", "num_epochs", "dtype", "param_dtype",
                          "optim.learning_rate", "optim.weight_decay", "optim.warmup_ratio", "optim.grad_clip_norm")
# Fields whose default is set but which may be None (the Hinton weight gives way to the explicit form).
NULLABLE_FIELDS = frozenset({"distill.alpha"})


def default_config() -> ml_collections.ConfigDict:
  """The default run: an MLP teacher distilled into a small MLP student on scikit-learn's digits, offline."""
  config = ml_collections.ConfigDict()

  # Seed of the student's initialization, dropout, and the order of training batches. Sweeping it repeats a run
  # on the same data split and the same teacher (see data.split_seed and teacher.seed for those).
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  # Data set: 'digits' (scikit-learn's 8x8 handwritten digits, bundled, offline), 'synthetic_clusters'
  # (Gaussian class clusters), 'synthetic_random_labels' (random inputs, random labels: pure memorization), the image
  # tasks 'fashion_mnist' and 'mnist' (28x28 grayscale, their official test split; kd_jax/data/mnist.py), the text
  # tasks 'sst2' and 'esnli', or 'causal_lm' (decoder-only LMs on prompt/response pairs or plain text;
  # kd_jax/data/causal_lm.py).
  config.data.name = "digits"
  # Seed of the stratified train/test split and of the train_fraction / labeled_fraction subsets.
  config.data.split_seed = 0
  # Fraction of the whole data set held out as the test split (stratified).
  config.data.test_fraction = 0.3
  # Fraction of the training split held out (stratified, every example labeled) as the validation split: evaluation
  # during training, the choice of the final model (train.select) and of a sweep's best point. The test split only
  # reports. In (0, 0.5]. Text tasks whose source has a validation split (data.validation_split) use that instead.
  # 5% of digits' 1,258 training images is 63, about 6 per class: the little data the default run has stays for
  # training (the teacher learns from 10% of the rest).
  config.data.validation_fraction = 0.05
  # Fraction of the training split kept at all (data-size ablation); in (0, 1].
  config.data.train_fraction = 1.0
  # Fraction of the kept training examples whose labels are kept; the rest form the unlabeled transfer set that
  # only the distillation term sees. The teacher is trained on the labeled examples only. In (0, 1].
  config.data.labeled_fraction = 0.1
  # Global batch size (over all devices and processes) of every training phase; divisible by the device count.
  config.data.batch_size = 32
  # Global batch size of inference (evaluation and the teacher-logit cache); divisible by the device count.
  config.data.eval_batch_size = 512
  # Text tasks ('sst2', 'esnli'; kd_jax/data/text.py): where the data comes from. 'hub': HF datasets'
  # load_dataset(path, subset) through the HF cache; 'tfds': tfds.load(path, data_dir=data_dir); 'files': path is a
  # directory of <split>.csv / <split>.jsonl / <split>.parquet; 'disk': path is a DatasetDict written by save_to_disk.
  # Image tasks: 'files' (the four IDX files in data_dir) or 'tfds' (tfds.load(path or name, data_dir=data_dir)).
  # causal_lm also: 'pydoc_topics', passages of Python's own documentation (pydoc_data/topics.py), offline everywhere.
  config.data.source = "hub"
  # Hub dataset id, TFDS name, or local directory (see source); the task configs set the real ones.
  config.data.path = config_dict.placeholder(str)
  # Hub dataset config name (e.g. 'sst2' of 'nyu-mll/glue'); None if it has none.
  config.data.subset = config_dict.placeholder(str)
  # HF datasets cache_dir or TFDS data_dir (a local copy); None for the libraries' defaults. Image tasks with
  # source 'files': the directory of the IDX files; None means /usr/share/datasets/fashion-mnist for fashion_mnist
  # (the Debian package dataset-fashion-mnist; MNIST has no default).
  config.data.data_dir = config_dict.placeholder(str)
  # Splits of the text tasks' source: training, validation (None: a validation_fraction slice of the training split)
  # and test (the reported metrics). They replace test_fraction.
  config.data.train_split = "train"
  config.data.validation_split = config_dict.placeholder(str)
  config.data.test_split = "validation"
  # Read only the first this many examples of the validation and test splits of the source; None for all of them.
  config.data.max_eval_examples = config_dict.placeholder(int)
  # Maximum tokens of a text input (the source, for seq2seq) and of a seq2seq target; longer ones are truncated.
  # causal_lm: max_length bounds prompt + response (a longer prompt is an error, the response is truncated) and
  # max_target_length the responses generated (evaluation, sequence-level and on-policy distillation).
  config.data.max_length = 128
  config.data.max_target_length = 64
  # causal_lm: the columns of the prompt and of the response; prompt_column None reads plain text from
  # response_column (every token a response token: the loss covers them all).
  config.data.prompt_column = config_dict.placeholder(str)
  config.data.response_column = "response"
  # causal_lm with prompts: render them with the tokenizer's chat template (a user turn, then the assistant's
  # response); False: the prompt text (with the tokenizer's special tokens) followed by the response and EOS.
  config.data.chat_template = True
  # causal_lm: concatenate the training sequences and cut them into rows of max_length tokens (no padding; the loss
  # mask is carried along). Needs data.validation_split; not with on-policy or sequence-level distillation.
  config.data.packing = False
  # Shape of the synthetic tasks (ignored by 'digits').
  config.data.synthetic = ml_collections.ConfigDict()
  config.data.synthetic.num_examples = 2000
  config.data.synthetic.num_features = 32
  config.data.synthetic.num_classes = 10
  # Standard deviation of each class cluster around its center (centers are drawn from a unit normal).
  config.data.synthetic.cluster_std = 1.0

  config.teacher = ml_collections.ConfigDict()
  # Registered model name: 'mlp', 'cnn' (image tasks) or 'hf' (a Hugging Face checkpoint, see `checkpoint`).
  config.teacher.name = "mlp"
  # 'train': train the teacher in this run (saved under teacher.workdir and reused by later runs);
  # 'pretrained': the checkpoint's weights as they are (HF models, e.g. a fine-tuned classifier);
  # otherwise the path of a teacher directory written by an earlier run (`<workdir>/teacher`).
  config.teacher.init = "train"
  # Where the trained teacher and its logit cache live; None means `<workdir>/teacher`. Sweeps point all their
  # points here so that the teacher is trained and cached once.
  config.teacher.workdir = config_dict.placeholder(str)
  # Seed of the teacher's initialization, dropout and batch order when init='train'.
  config.teacher.seed = 0
  # MLP: hidden layer widths (depth = number of entries) and dropout after every hidden layer.
  config.teacher.hidden_sizes = (1200, 1200)
  config.teacher.dropout_rate = 0.3
  # CNN (name='cnn', image tasks; kd_jax/models/cnn.py): output channels of each conv block (conv, GroupNorm, ReLU,
  # 2x2 max-pool; depth = number of entries, at most 4 on 28x28 images), the side of the square conv kernels (odd),
  # and the GroupNorm groups after every conv (0: no normalization; each width a multiple of it). hidden_sizes are
  # then the Dense layers after the conv blocks, and dropout_rate follows every block.
  config.teacher.conv_features = (32, 64)
  config.teacher.kernel_size = 3
  config.teacher.norm_groups = 0
  # Hugging Face models (name='hf'): hub id or local directory with config.json and weights.
  config.teacher.checkpoint = config_dict.placeholder(str)
  # Hugging Face models: 'sequence_classification', 'seq2seq' or 'causal_lm' (decoder-only LMs).
  config.teacher.task = config_dict.placeholder(str)
  # dtype of the forward computation and of the stored parameters ('float32' or 'bfloat16').
  config.teacher.dtype = "float32"
  config.teacher.param_dtype = "float32"
  # Training of the teacher (init='train'): epochs over the labeled examples, and its optimizer.
  config.teacher.num_epochs = 150
  config.teacher.optim = optim_config(learning_rate=1e-3, weight_decay=1e-4, warmup_ratio=0.05)

  # Several teachers (kd_jax/teachers/ensemble.py): the distillation target is the average of their probabilities at the
  # temperature T, mean_m softmax(z_m / T); the teacher's reported metrics are those of the average at T = 1. Each
  # member is a teacher of its own, trained and cached once (member 0, when it is config.teacher itself, is the
  # single-teacher run's teacher). Classification tasks; every divergence but 'mse'.
  config.ensemble = ml_collections.ConfigDict()
  # Number of teachers; 1 is a single teacher. Without `members`, member m is config.teacher with teacher.seed + m.
  config.ensemble.size = 1
  # Members that differ in more than their seed: () or one entry per member (ensemble.size entries), each a tuple of
  # (config.teacher field, value) pairs applied to config.teacher for that member, e.g.
  # ((), (("seed", 1),), (("seed", 2), ("hidden_sizes", (512,)))). Fields: those of ENSEMBLE_MEMBER_FIELDS.
  config.ensemble.members = ()

  config.student = ml_collections.ConfigDict()
  # Same fields as config.teacher's model fields.
  config.student.name = "mlp"
  config.student.hidden_sizes = (32,)
  config.student.dropout_rate = 0.0
  config.student.conv_features = (16, 32)
  config.student.kernel_size = 3
  config.student.norm_groups = 0
  config.student.checkpoint = config_dict.placeholder(str)
  config.student.task = config_dict.placeholder(str)
  config.student.dtype = "float32"
  config.student.param_dtype = "float32"
  # Build the student from the teacher instead of student.checkpoint (leave that None): the teacher's architecture
  # and widths with only these teacher layers (strictly increasing indices; student layer j = teacher layer
  # layers[j]), everything outside the layers (embeddings, pooler and head, T5's shared embedding, position bias and
  # final norms) copied: DistilBERT's initialization. HF teacher and student; the student's task is the teacher's;
  # T5 takes the same indices in its encoder and decoder. None: off. E.g. (0, 2, 4).
  config.student.init_from_teacher_layers = config_dict.placeholder(tuple)
  # Freezing: regular expressions (re.search) over '/'-joined parameter paths, e.g.
  # 'distilbert/transformer.layer.0/attention.q_lin/kernel'; only the parameters matching one of them train, the
  # others keep their initial values. None: every parameter trains (with LoRA: the classification head, 'classifier').
  config.student.trainable = config_dict.placeholder(tuple)
  # LoRA (Hu et al. 2021; kd_jax/models/peft.py) on HF students: each targeted Dense kernel W [in, out] gains A [in, r]
  # and B [r, out]: h = x W + (alpha / r) dropout(x) A B. Only the adapters and the parameters matching
  # student.trainable (None: the classification head, as peft's modules_to_save) train; the adapters are merged into
  # W for evaluation and export.
  config.student.lora = ml_collections.ConfigDict()
  # r: 0 is off; at most min(in, out) of every targeted layer.
  config.student.lora.rank = 0
  # The update's scale is alpha / r (peft's default alpha 8).
  config.student.lora.alpha = 8.0
  # Dropout on the adapters' input x (per example, like the model's dropout), in [0, 1).
  config.student.lora.dropout = 0.0
  # Dense layers given adapters: a layer named N is targeted when N is one of these or ends with '.' + one of them
  # (peft's rule). None: every family's attention query and value projections (query, value; q_lin, v_lin; q, v).
  config.student.lora.target_modules = config_dict.placeholder(tuple)

  config.distill = ml_collections.ConfigDict()
  # 'cached': teacher logits computed once for the training set and stored on disk, joined to examples by index.
  # 'online': the teacher runs inside the train step on exactly the student's (possibly augmented) batch.
  config.distill.teacher_mode = "cached"
  # Softmax temperature T of the distillation term; > 0.
  config.distill.temperature = 4.0
  # Hinton form: (1 - alpha) * CE + alpha * T^2 * D. In [0, 1]; alpha = 0 is training on hard labels only.
  # Set it to None to use the explicit form below instead.
  config.distill.alpha = 0.5
  # Explicit form: ce_weight * CE + kd_weight * T^2 * D (both >= 0). Use either alpha or these two, not both.
  config.distill.ce_weight = config_dict.placeholder(float)
  config.distill.kd_weight = config_dict.placeholder(float)
  # Label smoothing of the hard-label cross-entropy; in [0, 1).
  config.distill.label_smoothing = 0.0
  # D (formulas and references in kd_jax/training/losses.py: divergence): 'forward_kl' KL(p_t || p_s), 'reverse_kl'
  # KL(p_s || p_t), 'js' (Jensen-Shannon), 'generalized_js' (GKD's JSD_beta), 'skew_forward_kl' / 'skew_reverse_kl'
  # (DistiLLM), 'tvd' (total variation), 'akl' (adaptive KL), 'mse' (on logits).
  config.distill.divergence = "forward_kl"
  # generalized_js: beta in [0, 1], the teacher's weight in the mixture m = beta p_t + (1 - beta) p_s; 0.5 is 'js',
  # 0 is taken as forward KL and 1 as reverse KL (TRL's convention).
  config.distill.beta = 0.5
  # skew_forward_kl / skew_reverse_kl: lambda in [0, 1] (0: plain forward / reverse KL; DistiLLM uses 0.1).
  config.distill.skew = 0.1
  # akl: the teacher mass of the head (its most probable classes), in (0, 1].
  config.distill.akl_mu = 0.5
  # Schedules over each student phase: 'constant', or 'linear' / 'cosine' from the start value (temperature, alpha,
  # ce_weight, kd_weight above) at the first step to its *_end at the last; an end left None keeps its start. The
  # scheduled values are logged (temperature, hard_weight, soft_weight in history.jsonl).
  config.distill.schedule = "constant"
  config.distill.temperature_end = config_dict.placeholder(float)
  config.distill.alpha_end = config_dict.placeholder(float)
  config.distill.ce_weight_end = config_dict.placeholder(float)
  config.distill.kd_weight_end = config_dict.placeholder(float)
  # Multiply the distillation term by T^2 so its gradient scale does not shrink with T (Hinton et al. 2015).
  config.distill.t2_scaling = True
  # Gaussian noise added to the inputs of teacher and student alike in each train step (online mode only).
  config.distill.input_noise_std = 0.0
  # Seq2seq and causal_lm tasks: 'token' distills the teacher's distribution at every target (response) token
  # (teacher_mode cached or online); 'sequence' trains the student with cross-entropy on the teacher's own greedy
  # outputs (responses), generated once and cached as tokens (Kim & Rush 2016; the loss weights and teacher_mode
  # then do not apply).
  config.distill.strategy = "token"
  # Seq2seq cached mode: the teacher logits kept per target token (the k largest, with their vocabulary ids and the
  # log-sum-exp of the other logits; see losses.topk_divergence), and the dtype the k values are stored in: 'float16'
  # (default: 3 more mantissa bits than bfloat16, and logits stay far below its 65504 limit), 'bfloat16' or
  # 'float32'. Full-vocabulary logits are never stored for seq2seq tasks.
  config.distill.topk = 32
  config.distill.topk_dtype = "float16"
  # causal_lm, on-policy distillation (GKD, Agarwal et al. 2024): lambda in [0, 1], the probability that a training
  # batch's responses are sampled from the current student (at generation.train_temperature, at most
  # data.max_target_length tokens) and scored by the teacher in the step (teacher_mode='online'); the loss is then
  # the distillation term on the student's tokens. 0: supervised KD on the data's responses.
  config.distill.on_policy_fraction = 0.0
  # Feature distillation (kd_jax/training/feature_losses.py; needs teacher_mode='online'): the hidden states matched, as
  # (teacher, student) pairs of hidden-state indices (0 = embeddings or the MLP's inputs, l = the output of layer l),
  # e.g. ((0, 0), (2, 1), (4, 2)); 'uniform': student layer s = 1..L_s with teacher layer s * L_t // L_s; None: off.
  # A placeholder of type object, so that the command line takes both: --config.distill.features=uniform and
  # --config.distill.features='((0, 0), (2, 1))'. A learned linear projection maps the student's hidden state to the
  # teacher's width where they differ (trained with the student, not part of it).
  config.distill.features = config_dict.placeholder(object)
  # Distance of matched hidden states: 'mse' (TinyBERT) or 'cosine' (1 - cosine similarity, DistilBERT).
  config.distill.feature_loss = "mse"
  # Weight of the feature term (summed over the mapped pairs) in the loss; >= 0.
  config.distill.feature_weight = 1.0
  # Attention transfer: weight of the KL between teacher and student attention distributions of the mapped layers
  # (pairs with both indices >= 1; transformer models that tokenize alike); >= 0, 0 = off.
  config.distill.attention_weight = 0.0

  # Optimizer of the students: AdamW with linear warmup then linear decay to 0.
  config.optim = optim_config(learning_rate=3e-3, weight_decay=1e-4, warmup_ratio=0.05)

  config.train = ml_collections.ConfigDict()
  # Duration of each student's training in epochs over the training split (labeled + transfer set).
  config.train.num_epochs = 60
  # If set, overrides num_epochs with an exact number of steps.
  config.train.num_steps = config_dict.placeholder(int)
  # Evaluate on the validation split every this many steps (and at the end).
  config.train.eval_every_steps = 500
  # Which step's parameters each student phase (KD and hard-label) ends with: 'last', or 'best_validation': the
  # evaluated step with the best validation value of sweep.selection_metric (kept as its own checkpoint, so a resumed
  # run keeps it). The teacher, trained in the run, always ends with its last step.
  config.train.select = "last"
  # Save a checkpoint every this many steps (and at the end); a rerun resumes from the latest one.
  config.train.checkpoint_every_steps = 100
  # Log the training losses every this many steps.
  config.train.log_every_steps = 100
  # Number of checkpoints kept per model.
  config.train.max_checkpoints_to_keep = 2
  # Number of local devices the mesh (config.mesh) spans; None means every device of every process.
  config.train.num_devices = config_dict.placeholder(int)
  # Most optimizer steps run per compiled call (kd_jax/training/steps.py: a loop on the device over stacked batches, no
  # host round trip per step). A call ends at every log, eval and checkpoint step and after about a second (SIGTERM is
  # honored between calls); 1 dispatches every step from Python.
  config.train.steps_per_dispatch = 100
  # Training sets (inputs, labels and joined teacher logits) up to this many MiB are copied to every device once and
  # batched there; larger ones stream through tf.data (gathered and prefetched in background threads). 0 sends
  # every training set through tf.data. The batches are the same either way.
  config.train.device_data_max_mib = 256
  # Gradient accumulation: each device's rows of a step's batch (data.batch_size / devices) run as this many
  # micro-batches one after another inside the compiled step, their gradients summed before one optimizer step;
  # the loss is normalized over the whole global batch, so any value gives the update of 1 (up to float rounding)
  # with the activations of one micro-batch in memory. Must divide the per-device rows.
  config.train.microbatches = 1
  # Rematerialization (activation checkpointing) of the transformer blocks of HF models while they train (the
  # student; the teacher in its own training): 'none'; 'block': each block keeps only its input for the backward
  # pass and recomputes the rest (flax nn.remat per block); or a jax.checkpoint_policies name applied per block
  # (e.g. 'dots_saveable': keep the matmul outputs, recompute the elementwise ops). Same results, more compute, less
  # memory on accelerators (XLA:CPU merges the recomputation back: see the README). An online teacher runs forward
  # only (no gradient, nothing kept for a backward pass): remat does not apply to it.
  config.train.remat = "none"

  # The device mesh (kd_jax/parallel/sharding.py): axis sizes whose product is the device count (train.num_devices local
  # devices, or every device of every process); one may be -1, the devices the others leave. The batch rows are
  # split over data x fsdp; the parameters and optimizer state of student and teacher are replicated over data,
  # split over fsdp (each array along its largest dimension divisible by it: FSDP / ZeRO-3, gathered where the
  # computation needs them) and over tensor (attention heads and MLP hidden units of the HF models: Megatron-style
  # tensor parallelism). Results do not depend on the mesh (up to float rounding), so a run resumes on another.
  # Pure FSDP on 8 devices: --config.mesh.data=1 --config.mesh.fsdp=8.
  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1
  config.mesh.fsdp = 1
  # Must divide the attention heads of the HF models (the MLP and CNN have none: they stay replicated over it). A mesh
  # whose three axes all exceed 1 is refused (XLA in jax 0.10 aborts compiling a transformer's step on it).
  config.mesh.tensor = 1
  # Placement rules tried before the built-in ones (sharding.TENSOR_RULES, then FSDP): a tuple of (regular
  # expression searched in the '/'-joined parameter path, the mesh axis of each dimension: 'fsdp', 'tensor' or
  # None) pairs, e.g. (("classifier/kernel", (None, "tensor")),); a rule applies to arrays of its rank whose named
  # dimensions the axes divide (the optimizer state's paths end in the parameter's, so it follows).
  config.mesh.rules = ()

  # Also train the hard-label student (the same run without the distillation term) as the baseline.
  config.baseline = True

  # Seq2seq evaluation: every model's outputs for the test split are generated (max data.max_target_length tokens)
  # and scored (kd_jax/evaluation/__init__.py).
  config.generation = ml_collections.ConfigDict()
  # Decoding temperatures, 0 = greedy; the metrics at the first are the models' metrics, the students' metrics at
  # every one are also reported (the generation-temperature ablation: one trained student, no retraining).
  config.generation.temperatures = (0.0,)
  # Sampling filters for temperatures > 0: keep the top_k most likely tokens and/or the top_p nucleus; None: off.
  config.generation.top_k = config_dict.placeholder(int)
  config.generation.top_p = config_dict.placeholder(float)
  # causal_lm on-policy distillation: the temperature the student's responses are sampled at during training (> 0;
  # GKD samples at 1).
  config.generation.train_temperature = 1.0

  # Sweeps (kd_jax/sweeps/): the config runs once per point, each in `<workdir>/<point name>/`, then the report
  # (results.csv, summary.md, plots/) is written. A config is a sweep when grid or zipped is non-empty or seeds > 1.
  config.sweep = ml_collections.ConfigDict()
  # Cartesian product: a tuple of (dotted field path, tuple of values) pairs. Any field can be swept, e.g.
  # (("distill.temperature", (1.0, 2.0)), ("distill.alpha", (0.5, 0.9))) gives 4 points.
  config.sweep.grid = ()
  # Values that advance together: a tuple of groups, each a tuple of (path, values) pairs of equal length; a group
  # is one factor, multiplied with the grid and the other groups. E.g. one group of 2 values:
  # ((("student.hidden_sizes", ((16,), (64,))), ("optim.learning_rate", (3e-3, 1e-3))),)
  config.sweep.zipped = ()
  # Repeats of every point, with config.seed = 0, 1, ..., seeds - 1 (the base config's seed is not used).
  config.sweep.seeds = 1
  # The student metric that picks the best value in the report: accuracy or agreement (higher is better), or nll,
  # ece, brier or kl_to_teacher (lower is better).
  config.sweep.selection_metric = "accuracy"
  # 'sequential': the points run one after another, each a full run. 'vectorized' (kd_jax/training/vectorized.py):
  # points whose configs differ only in seed, distill.temperature / alpha / ce_weight / kd_weight / label_smoothing and
  # optim.learning_rate train together in one compiled program (vmap over points); other differences (widths, data,
  # divergence...) split the points into groups trained in turn. Same results.json and report, up to float rounding. One
  # process, classification tasks; --sweep_index runs its point sequentially.
  config.sweep.mode = "sequential"

  return config


def optim_config(*, learning_rate: float, weight_decay: float, warmup_ratio: float) -> ml_collections.ConfigDict:
  """AdamW settings: peak learning rate, decoupled weight decay, and the warmup's share of all steps."""
  optim = ml_collections.ConfigDict()
  # Peak learning rate, reached after warmup; > 0.
  optim.learning_rate = learning_rate
  # Decoupled weight decay (AdamW); >= 0.
  optim.weight_decay = weight_decay
  # Fraction of the steps spent warming the learning rate up linearly from 0; in [0, 1).
  optim.warmup_ratio = warmup_ratio
  # Clip gradients to this global norm; None disables clipping.
  optim.grad_clip_norm = config_dict.placeholder(float)
  # dtype of AdamW's first moment (optax.adamw's mu_dtype): 'float32' or 'bfloat16' (half that moment's memory).
  # The second moment keeps the parameters' dtype (float32 master parameters with param_dtype 'float32'): optax has
  # no dtype option for it, and its average moves by (1 - b2) = 0.1% a step, below bfloat16's 0.4% resolution.
  optim.moment_dtype = "float32"
  return optim


def parse_options(arg: str | None, allowed: tuple[str, ...]) -> tuple[str, ...]:
  """Splits a config argument such as 'smoke' or 'sst2,smoke' (`--config=file.py:arg`) and rejects unknown options."""
  options = tuple(option for option in (arg or "").split(",") if option)
  for option in options:
    if option not in allowed:
      raise ValueError(f"unknown config argument {option!r}; allowed: {', '.join(allowed)}")
  return options
