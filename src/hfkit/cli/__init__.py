"""The `hfkit` command line (a typer app in `app.py`; entry point `hfkit.cli.app:main`)."""
