"""``python -m producer`` is the ``fleet`` command."""

from producer.cli import main

main()
