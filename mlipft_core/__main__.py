"""``python -m mlipft_core`` is the ``mlipft`` command."""

from .cli import main

raise SystemExit(main())
