# Pinned versions of what setup fetches. Sourced by scripts/*.sh.
# llama.cpp comes from the source distribution of llama-cpp-python on PyPI,
# which carries a full llama.cpp tree under vendor/llama.cpp.
LLAMA_CPP_PYTHON_VERSION=0.3.36
LLAMA_CPP_PYTHON_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
