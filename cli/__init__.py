"""The `arbiter` command: thin wiring of the packages' functions to Typer commands.

One module per command group; only this package (and the app factory) reads settings.
"""
