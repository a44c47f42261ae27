"""``python -m adapters`` runs the ``switchboard`` command."""

from adapters.cli import main

raise SystemExit(main())
