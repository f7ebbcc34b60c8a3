"""``python -m mlipft_core.cli`` is the ``mlipft`` command."""

from . import main

raise SystemExit(main())
