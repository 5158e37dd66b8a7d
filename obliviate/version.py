"""The package's version, in a module of its own so score and report can name it without importing the
package's __init__ (which imports api -> runner -> score: a circle). pyproject.toml reads it from here."""
__version__ = "0.1.0"
