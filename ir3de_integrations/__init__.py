"""Thin adapters that plug the ir3de router into other frameworks (LangChain, LlamaIndex, Ray)."""
