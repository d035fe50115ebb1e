# Build with nvcc (sm_90) when it is on the PATH; otherwise the same sources
# build CPU-only with g++ (the CUDA parts sit behind #ifdef __CUDACC__).
#   make train_mamba      the training program
#   make test             CPU tests (finite differences, PyTorch oracle, I/O)
#   make test-gpu         CUDA vs CPU tests (needs a GPU)
#   make dev              kernel workbench in dev/ (needs nvcc)
#   make kjv              prepare the KJV data and train on it (the main job)

NVCC ?= $(shell command -v nvcc 2>/dev/null)
CXX ?= g++
CPU_FLAGS := -O3 -march=native -fopenmp -std=c++17 -Wall -Wno-unused-function -Wno-unknown-pragmas
NVCC_FLAGS := -O3 -std=c++17 -arch=sm_90 -Xcompiler "-fopenmp -Wno-unknown-pragmas" -lineinfo
NVCC_LIBS := -lcublas -lgomp
SRC_HEADERS := $(wildcard src/*.h)

ifeq ($(NVCC),)
  BUILD_NOTE := no nvcc found: building CPU-only with $(CXX)
  COMPILE = $(CXX) $(CPU_FLAGS) -x c++ $< -o $@ -lm
else
  COMPILE = $(NVCC) $(NVCC_FLAGS) $< -o $@ $(NVCC_LIBS)
endif

.PHONY: all test test-gpu dev clean kjv
all: train_mamba

train_mamba: train_mamba.cu $(SRC_HEADERS)
	$(if $(BUILD_NOTE),@echo "$(BUILD_NOTE)")
	$(COMPILE)

# CPU tests are always built with g++: they test the CPU reference, build fast,
# and need no CUDA on the CI machine.
CPU_TESTS := $(patsubst test/%.cu,build/%,$(wildcard test/test_*.cu))
build/test_%: test/test_%.cu $(SRC_HEADERS) test/test_util.h
	@mkdir -p build
	$(CXX) $(CPU_FLAGS) -x c++ $< -o $@ -lm

# the PyTorch oracle (test/torch_check.py) compares against what this dumps
build/torch_dump: test/torch_dump.cu test/tensor_file.h $(SRC_HEADERS)
	@mkdir -p build
	$(CXX) $(CPU_FLAGS) -x c++ $< -o $@ -lm

test: $(CPU_TESTS) build/torch_dump train_mamba_cpu
	@bash test/run_tests.sh cpu

# a CPU-only build of the trainer, used by the end-to-end CPU tests
train_mamba_cpu: train_mamba.cu $(SRC_HEADERS)
	$(CXX) $(CPU_FLAGS) -x c++ $< -o $@ -lm

GPU_TESTS := $(patsubst test/%.cu,build/%,$(wildcard test/gpu_*.cu))
build/gpu_%: test/gpu_%.cu $(SRC_HEADERS) test/test_util.h
	@mkdir -p build
	$(NVCC) $(NVCC_FLAGS) $< -o $@ $(NVCC_LIBS)

test-gpu: $(GPU_TESTS) train_mamba
	@bash test/run_tests.sh gpu

DEV_SRCS := $(wildcard dev/*.cu)
DEV_BINS := $(patsubst dev/%.cu,build/dev_%,$(DEV_SRCS))
build/dev_%: dev/%.cu dev/dev_common.h
	@mkdir -p build
	$(NVCC) $(NVCC_FLAGS) $< -o $@ $(NVCC_LIBS)
# the backward workbench #includes the forward one (its kernels make hs)
build/dev_selective_scan_backward: dev/selective_scan_forward.cu
dev: $(DEV_BINS)

# the main job: KJV shards, build, train (GPU if present, else CPU), plot
kjv:
	bash data_scripts/train_kjv.sh

clean:
	rm -rf build train_mamba train_mamba_cpu
