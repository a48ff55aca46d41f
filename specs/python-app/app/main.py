"""A tiny app that imports its pinned dependencies."""
import idna
import six

print(f"six {six.__version__}, idna {idna.__version__}: {idna.encode('bücher.example').decode()}")
