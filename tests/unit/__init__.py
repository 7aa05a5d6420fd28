"""Unit tests of the math modules on a toy tokenizer (a package, so their module names never clash)."""
