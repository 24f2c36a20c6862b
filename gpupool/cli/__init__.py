"""The gpupool command line (Typer). Modules here import heavy libraries lazily."""
