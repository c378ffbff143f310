"""The ``pedseg`` command line. Commands are thin: parse, build a config, call one library function,
render the result. Heavy libraries (torch, onnxruntime) are imported inside commands, never here."""

from pedseg.cli.app import app, main

__all__ = ["app", "main"]
