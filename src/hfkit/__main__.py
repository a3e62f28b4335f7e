"""`python -m hfkit …` (and `torchrun --nproc-per-node N -m hfkit train …`) runs the `hfkit` command."""

from .cli.app import main

main()
