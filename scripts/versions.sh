# Pinned versions of what setup fetches. Sourced by scripts/*.sh.
# llama.cpp comes from the source distribution of llama-cpp-python on PyPI,
# which carries a full llama.cpp tree under vendor/llama.cpp.
LLAMA_CPP_PYTHON_VERSION=0.3.36
LLAMA_CPP_PYTHON_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
# nanoarrow (Apache Arrow's small C library; its IPC reader reads .arrow
# files) comes from the source distribution of the nanoarrow Python package
# on PyPI, which carries the C library and the flatcc runtime it needs.
NANOARROW_VERSION=0.9.0
NANOARROW_SHA256=1ce15bbed8532839347faa78824c5dbd3769bff60661003e34c6fba5dd881bd3
NANOARROW_URL=https://files.pythonhosted.org/packages/bc/b2/8fedfa966cc25126e1c9090e6d9fed75dab4e1d2716e3ca2d18ea2d6f438/nanoarrow-0.9.0.tar.gz
