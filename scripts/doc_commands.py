"""The shell commands of README.md and docs/*.md: lists them, checks them without training, or runs the quick ones.

    python scripts/doc_commands.py            # every command of the ```bash blocks, one per line, with its place
    python scripts/doc_commands.py --check    # static checks, no training (a few seconds)
    python scripts/doc_commands.py --run [--only TEXT] [--timeout 60]

A command is a line of a fenced ```bash block, with its `\\` continuations joined and split at `&&`; comments are
dropped. `--check` verifies, for every `python main.py ...` invocation (also one inside `$(...)` or a quoted
`--wrap "..."`), that its `--config=FILE[:ARG]` names a config file whose `get_config(ARG)` accepts the argument
(the file imported as tests/conftest.py's `load_config` does) and that each `--config.a.b=value` names a field of
that config; the same for the config flags of scripts/memory_plan.py and scripts/topk_vs_dense.py. It also checks
that every `scripts/...` and `configs/...` path, every `python -m MODULE` and every `pip install -r FILE` a command
names exists, and that every relative link of the pages names an existing file and heading (docs/config.md, which
its own script generates from the schema, may be absent). Exit status 1 when something does not.

`--run` runs the `python main.py` commands in their `:smoke` form (`smoke` added to the config's arguments), one
subprocess each with a timeout, from the repository root, with every `runs/...` or `/tmp/...` path moved into one
temporary directory (the commands run in document order, so a command that reuses an earlier one's teacher finds
it); other commands are listed as not run. It prints pass / fail per command.
"""

import argparse
import dataclasses
import functools
import importlib.util
import os
import pathlib
import re
import shlex
import subprocess
import sys
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
# Scripts that take `--config=FILE[:ARG]` and `--config.FIELD=VALUE` (ml_collections config flags), with the config
# they load when no --config is given.
CONFIG_SCRIPTS = {"main.py": "configs/default.py", "scripts/memory_plan.py": None,
                  "scripts/topk_vs_dense.py": "configs/esnli.py:smoke", "scripts/teacher_logprobs.py": None}
# Tokens that end a command's arguments (pipes, lists, redirections).
SHELL_OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>&1", "2>"}
REPO_PATH = re.compile(r"(?<![\w./$-])((?:scripts|configs)/[\w./-]*\w)")


@dataclasses.dataclass(frozen=True)
class Command:
  file: str  # relative to the repository root
  line: int  # of the block line the command starts on
  text: str

  def __str__(self):
    return f"{self.file}:{self.line}: {self.text}"


def doc_files(root: pathlib.Path = REPO_ROOT) -> list[pathlib.Path]:
  """README.md and docs/*.md."""
  return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def bash_blocks(text: str) -> list[tuple[int, list[str]]]:
  """The fenced ```bash blocks of a Markdown text: (line number of the first line inside, lines without the fence's
  indentation)."""
  blocks, lines, i = [], text.splitlines(), 0
  while i < len(lines):
    start = re.match(r"^(\s*)```bash\s*$", lines[i])
    i += 1
    if not start:
      continue
    indent, first, body = len(start.group(1)), i + 1, []
    while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
      body.append(lines[i][indent:] if lines[i][:indent].isspace() else lines[i].lstrip())
      i += 1
    i += 1
    blocks.append((first, body))
  return blocks


def _split_unquoted(line: str, separator: str) -> list[str]:
  """`line` split at `separator` where it stands outside quotes (and outside $(...))."""
  parts, current, quote, depth, i = [], "", None, 0, 0
  while i < len(line):
    char = line[i]
    if quote:
      if char == "\\" and quote == '"' and i + 1 < len(line):
        current += line[i:i + 2]
        i += 2
        continue
      quote = None if char == quote else quote
    elif char in "'\"":
      quote = char
    elif line.startswith("$(", i):
      depth += 1
    elif char == ")" and depth:
      depth -= 1
    elif char == "\\" and i + 1 < len(line):
      current += line[i:i + 2]
      i += 2
      continue
    elif depth == 0 and line.startswith(separator, i):
      parts.append(current)
      current, i = "", i + len(separator)
      continue
    current += char
    i += 1
  return parts + [current]


def _without_comment(line: str) -> str:
  """`line` without a trailing `# comment` (a # that starts a word outside quotes)."""
  quote = None
  for i, char in enumerate(line):
    if quote:
      quote = None if char == quote else quote
    elif char in "'\"":
      quote = char
    elif char == "#" and (i == 0 or line[i - 1].isspace()):
      return line[:i].rstrip()
  return line.rstrip()


def block_commands(first_line: int, lines: list[str]) -> list[tuple[int, str]]:
  """(line, command) of a block: continuations joined, comments dropped, split at `&&`."""
  commands, current, start = [], "", None
  for offset, line in enumerate(lines):
    if start is None:
      if not line.strip() or line.lstrip().startswith("#"):
        continue
      start = first_line + offset
    stripped = (line if line.rstrip().endswith("\\") else _without_comment(line)).strip()
    if stripped.endswith("\\"):
      current += stripped[:-1].rstrip() + " "
      continue
    current += stripped
    commands += [(start, part.strip()) for part in _split_unquoted(current, "&&") if part.strip()]
    current, start = "", None
  if current.strip():
    commands.append((start, current.strip()))
  return commands


def list_commands(root: pathlib.Path = REPO_ROOT) -> list[Command]:
  """Every command of the ```bash blocks of README.md and docs/*.md, in document order."""
  commands = []
  for path in doc_files(root):
    if not path.exists():
      continue
    for first_line, lines in bash_blocks(path.read_text()):
      commands += [Command(str(path.relative_to(root)), line, text) for line, text in block_commands(first_line, lines)]
  return commands


def _tokens(text: str) -> list[str]:
  try:
    return shlex.split(text, comments=True)
  except ValueError:
    return text.split()


def python_invocations(text: str) -> list[tuple[str, list[str]]]:
  """(program, arguments) of every `python PROGRAM ...` or `python -m MODULE ...` in a command, also inside `$(...)`
  and inside quoted arguments (`--wrap "python main.py ..."`). PROGRAM is the script's path as written, or
  `-m MODULE`."""
  found, tokens = [], _tokens(text)
  for i, token in enumerate(tokens):
    if " " in token.strip():
      found += python_invocations(token)
      continue
    word = token.rsplit("(", 1)[-1]  # N=$(python ...
    if not re.fullmatch(r"(\S*/)?python3?", word) or i + 1 >= len(tokens):
      continue
    program, k = tokens[i + 1], i + 2
    if program == "-m" and i + 2 < len(tokens):
      program, k = f"-m {tokens[i + 2]}", i + 3
    if program.startswith("-") and not program.startswith("-m "):
      continue  # python -c '...', python -V
    arguments = []
    for argument in tokens[k:]:
      if argument in SHELL_OPERATORS:
        break
      closes = argument.endswith(")") and "(" not in argument and "$(" in tokens[i]
      arguments.append(argument[:-1] if closes else argument)
      if closes:
        break
    found.append((program, arguments))
  return found


def config_flags(program: str, arguments: list[str]) -> tuple[str | None, list[tuple[str, str]]]:
  """The `--config` value of a config script's arguments (its default where absent) and its `--config.x=v`
  overrides as (path, value)."""
  config, overrides, i = CONFIG_SCRIPTS.get(program), [], 0
  while i < len(arguments):
    argument = arguments[i]
    if argument.startswith("--config="):
      config = argument.split("=", 1)[1]
    elif argument == "--config" and i + 1 < len(arguments):
      config = arguments[i + 1]
      i += 1
    elif argument.startswith("--config."):
      path, _, value = argument[len("--config."):].partition("=")
      overrides.append((path, value))
    i += 1
  return config, overrides


@functools.lru_cache(maxsize=None)
def load_config(root: str, path: str, arg: str | None):
  """get_config(arg) of a config file of the repository `root` (as tests/conftest.py's load_config)."""
  if root not in sys.path:
    sys.path.insert(0, root)  # the config files import `configs` and `kd_jax`
  spec = importlib.util.spec_from_file_location(f"doc_config_{pathlib.Path(path).stem}", pathlib.Path(root) / path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def has_field(config, path: str) -> bool:
  """Whether the dotted `path` names a field of the ConfigDict `config`."""
  for part in path.split("."):
    try:
      if part not in config.keys():
        return False
    except AttributeError:  # reached a value that is not a section
      return False
    config = config[part]
  return True


def _module_exists(module: str, root: pathlib.Path) -> bool:
  parts = module.split(".")
  if (root / parts[0]).is_dir() or (root / f"{parts[0]}.py").exists():
    base = root.joinpath(*parts)
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists() or (base / "__main__.py").exists()
  return importlib.util.find_spec(parts[0]) is not None


def check_command(text: str, root: pathlib.Path = REPO_ROOT) -> list[str]:
  """What is wrong with one command (empty when nothing): a config file or argument, a field, a path, a module."""
  problems = []
  for path in REPO_PATH.findall(text):
    if not (root / path).exists():
      problems.append(f"{path}: no such file or directory")
  tokens = _tokens(text)
  for i, token in enumerate(tokens[:-1]):
    if token in ("-r", "--requirement") and "pip" in " ".join(tokens[:i]) and not (root / tokens[i + 1]).exists():
      problems.append(f"-r {tokens[i + 1]}: no such requirements file")
  for program, arguments in python_invocations(text):
    if program.startswith("-m "):
      if not _module_exists(program[3:], root):
        problems.append(f"python {program}: no such module")
      continue
    if program not in CONFIG_SCRIPTS:
      continue
    config_value, overrides = config_flags(program, arguments)
    if config_value is None:
      continue
    file, _, arg = config_value.partition(":")
    if not (root / file).is_file():
      problems.append(f"--config={config_value}: no such config file")
      continue
    try:
      config = load_config(str(root), file, arg or None)
    except Exception as error:  # pylint: disable=broad-except  (what main.py would print as its one-line error)
      problems.append(f"--config={config_value}: get_config({arg!r}) raised {type(error).__name__}: {error}")
      continue
    for path, _ in overrides:
      if not has_field(config, path):
        problems.append(f"--config.{path}: no field config.{path} in {config_value}")
  return problems


def check(root: pathlib.Path = REPO_ROOT) -> list[tuple[Command, list[str]]]:
  """(command, problems) of every command of the docs that has a problem."""
  return [(command, problems) for command in list_commands(root) if (problems := check_command(command.text, root))]


def heading_anchor(heading: str) -> str:
  """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
  return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: pathlib.Path) -> set[str]:
  text = re.sub(r"^\s*```.*?^\s*```", "", path.read_text(), flags=re.S | re.M)
  return {heading_anchor(match) for match in re.findall(r"^#+\s+(.*)$", text, flags=re.M)}


def check_links(root: pathlib.Path = REPO_ROOT) -> list[str]:
  """Relative links of README.md and docs/*.md whose file or heading does not exist, as 'file:line: problem'."""
  problems = []
  for path in doc_files(root):
    if not path.exists():
      continue
    for number, line in enumerate(path.read_text().splitlines(), start=1):
      for target in re.findall(r"\]\(([^)\s]+)\)", line):
        if re.match(r"^[a-z]+:", target):
          continue  # https:, mailto:
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        where = f"{path.relative_to(root)}:{number}"
        if not linked.exists():
          if linked != (root / "docs" / "config.md").resolve():  # generated from the schema by its own script
            problems.append(f"{where}: link to {target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
          problems.append(f"{where}: link to {target}: no such heading")
  return problems


def smoke_form(text: str, scratch: pathlib.Path) -> tuple[dict, list[str]] | None:
  """(environment assignments, argv) of a `python main.py ...` command's `:smoke` form, its run and temporary paths
  moved under `scratch`; None for another command, or one with shell variables."""
  if "$" in text:
    return None
  tokens = _tokens(text)
  environment = []
  while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", tokens[0]):
    environment.append(tokens.pop(0))
  if len(tokens) < 2 or not re.fullmatch(r"python3?", tokens[0]) or tokens[1] != "main.py":
    return None
  if any(token in SHELL_OPERATORS for token in tokens):
    return None
  arguments = tokens[2:]
  if not any(argument.startswith("--config=") for argument in arguments):
    arguments.insert(0, f"--config={CONFIG_SCRIPTS['main.py']}")

  def moved(value: str) -> str:
    if value.startswith("runs/") or value.startswith("/tmp/"):
      return str(scratch / value.lstrip("/"))
    return value

  argv = []
  for argument in arguments:
    name, equals, value = argument.partition("=")
    if name == "--config":
      file, _, arg = value.partition(":")
      options = [option for option in arg.split(",") if option]
      value = f"{file}:{','.join(options + ([] if 'smoke' in options else ['smoke']))}"
    elif equals:
      value = moved(value)
    argv.append(f"{name}={value}" if equals else argument)
  return dict(assignment.split("=", 1) for assignment in environment), [sys.executable, "main.py"] + argv


def run(commands: list[Command], timeout: float) -> int:
  """Runs the smoke forms of the `python main.py` commands; prints pass / fail / not run per command. The number
  that failed."""
  failed = 0
  with tempfile.TemporaryDirectory(prefix="doc_commands_") as scratch:
    for command in commands:
      form = smoke_form(command.text, pathlib.Path(scratch))
      if form is None:
        print(f"not run    {command}")
        continue
      assignments, argv = form
      environment = {key: value for key, value in os.environ.items() if key not in ("XLA_FLAGS", "PJRT_NPROC")}
      environment.update(assignments)
      start = time.monotonic()
      try:
        result = subprocess.run(argv, cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=timeout,
                                check=False)
        outcome = "pass" if result.returncode == 0 else f"fail (exit {result.returncode})"
        detail = "" if result.returncode == 0 else (result.stderr.strip().splitlines() or [""])[-1]
      except subprocess.TimeoutExpired:
        outcome, detail = f"fail (over {timeout:.0f} s)", ""
      failed += not outcome.startswith("pass")
      print(f"{outcome:<10} {time.monotonic() - start:5.1f} s  {command}\n    ran: {shlex.join(argv[1:])}"
            + (f"\n    {detail}" if detail else ""), flush=True)
  return failed


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  mode = parser.add_mutually_exclusive_group()
  mode.add_argument("--check", action="store_true", help="check configs, fields, paths and modules; run nothing")
  mode.add_argument("--run", action="store_true", help="run the :smoke forms of the python main.py commands")
  parser.add_argument("--only", default=None, help="--run: only the commands containing this text")
  parser.add_argument("--timeout", type=float, default=60, help="--run: seconds per command")
  args = parser.parse_args()
  commands = list_commands()
  if args.check:
    problems, link_problems = check(), check_links()
    for command, command_problems in problems:
      print(command)
      for problem in command_problems:
        print(f"    {problem}")
    for problem in link_problems:
      print(problem)
    invocations = sum(program == "main.py" for command in commands for program, _ in python_invocations(command.text))
    print(f"{len(commands)} commands in {len(doc_files())} files ({invocations} python main.py invocations): "
          f"{len(problems)} with problems; {len(link_problems)} broken links")
    return 1 if problems or link_problems else 0
  if args.run:
    selected = [command for command in commands if args.only is None or args.only in command.text]
    failed = run(selected, args.timeout)
    print(f"{len(selected)} commands: {failed} failed")
    return 1 if failed else 0
  for command in commands:
    print(command)
  return 0


if __name__ == "__main__":
  sys.exit(main())
