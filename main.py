"""Runs a kd_jax config: `python main.py --config=configs/default.py --workdir=runs/default`.

The command line lives in kd_jax/cli.py (`cli.main(argv)` returns the exit status; tests call it in-process);
`python main.py --help` lists the flags, the config files and where their fields are documented.
"""

import sys

from kd_jax.parallel import environment

environment.prepare()  # before JAX starts

from kd_jax import cli  # pylint: disable=wrong-import-position

if __name__ == "__main__":
  sys.exit(cli.main(sys.argv))
