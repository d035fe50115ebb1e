# Build with nvcc when it is on the PATH; otherwise the same sources build
# CPU-only with g++ (the CUDA parts sit behind #ifdef __CUDACC__).
#   make train_mamba      the training program
#   make test             CPU tests (finite differences, PyTorch oracle, I/O)
#   make test-gpu         CUDA vs CPU tests (needs a GPU)
#   make dev              kernel workbench in dev/ (needs nvcc)
#   make kjv              prepare the KJV data and train on it (the main job)
#   make vlm              the VLM's stages on Fashion-MNIST scenes, the accuracy table
#   make lora-study       KJV pretraining, nine fine-tunings on the fortunes (LoRA vs full)
#   make arch-study       Mamba-1, Mamba-2, transformer and hybrid on KJV at matched size (GPU)
#   make vlm-study        visual-token reduction: methods x ratios, accuracy, FLOPs, latency (GPU)
#   make vit-study        a ViT classifier with ToMe / pooling / random: accuracy vs FLOPs and images/s (GPU)
#   make bench            the mamba-130m step and generation beside the anchors (GPU)
#   make GPU_ARCH=sm_80   build the CUDA code for another GPU than the one present
#   make NVCC=            build CPU-only even where nvcc is installed

NVCC ?= $(shell command -v nvcc 2>/dev/null)
CXX ?= g++
# STB_INCLUDE: a folder holding stb/stb_image.h where libstb-dev is not installed
# (the GPU machine: `make STB_INCLUDE=.carry/include`)
STB_INCLUDE ?=
INCLUDES := $(if $(STB_INCLUDE),-I$(STB_INCLUDE))
CPU_FLAGS := -O3 -march=native -fopenmp -std=c++17 -Wall -Wno-unused-function -Wno-unknown-pragmas $(INCLUDES)
NVCC_LIBS := -lcublas -lgomp
SRC_HEADERS := $(wildcard src/*.h)

# The CUDA arch: the first GPU's compute capability ("8.9" -> sm_89), sm_90
# when no GPU answers (a build machine without one). Only asked when nvcc is there.
ifneq ($(NVCC),)
  ifeq ($(GPU_ARCH),)
    GPU_CC := $(shell nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | grep -E '^ *[0-9]+\.[0-9]+ *$$' | tr -d ' .')
    GPU_ARCH := $(if $(GPU_CC),sm_$(GPU_CC),sm_90)
    ARCH_FROM := $(if $(GPU_CC),the GPU present,no GPU found: default)
  else
    ARCH_FROM := GPU_ARCH
  endif
endif
# the fast scan kernels use cp.async (sm_80+): refuse older GPUs with a way out
# ("sm_90a" -> 90; a non-numeric arch such as "native" is passed through unchecked)
ARCH_NUM := $(shell echo '$(GPU_ARCH)' | sed -n 's/^sm_\([0-9][0-9]*\)[a-z]*$$/\1/p')
NVCC_FLAGS := -O3 -std=c++17 -arch=$(GPU_ARCH) -Xcompiler "-fopenmp -Wno-unknown-pragmas" -lineinfo $(INCLUDES)

ifeq ($(NVCC),)
  BUILD_NOTE := no nvcc found: building CPU-only with $(CXX)
  COMPILE = $(CXX) $(CPU_FLAGS) -x c++ $< -o $@ -lm
  ARCH_CHECK :=
else
  COMPILE = $(NVCC) $(NVCC_FLAGS) $< -o $@ $(NVCC_LIBS)
  ARCH_CHECK := cuda-arch
endif

.PHONY: all test test-gpu dev clean kjv cuda-arch
all: train_mamba train_vlm

# order-only: checked and printed before any nvcc build, without forcing a rebuild
cuda-arch:
	@if [ -n "$(ARCH_NUM)" ] && [ "$(ARCH_NUM)" -lt 80 ]; then \
	    echo "GPU $(GPU_ARCH) ($(ARCH_FROM)): the CUDA kernels need sm_80 or newer (A100, RTX 30xx/40xx, H100);" \
	         "build the CPU-only version with \`make NVCC=\` (\`make kjv NVCC=\` for the main job)" >&2; \
	    exit 1; \
	fi
	@echo "CUDA arch: $(GPU_ARCH) ($(ARCH_FROM))"

train_mamba: train_mamba.cu $(SRC_HEADERS) | $(ARCH_CHECK)
	$(if $(BUILD_NOTE),@echo "$(BUILD_NOTE)")
	$(COMPILE)

# CPU tests are always built with g++: they test the CPU reference, build fast,
# and need no CUDA on the CI machine.
CPU_TESTS := $(patsubst test/%.cu,build/%,$(wildcard test/test_*.cu))
build/test_%: test/test_%.cu $(SRC_HEADERS) $(wildcard test/*.h)
	@mkdir -p build
	$(CXX) $(CPU_FLAGS) -x c++ $< -o $@ -lm

# the PyTorch oracle (test/torch_check.py) compares against what this dumps
build/torch_dump: test/torch_dump.cu test/tensor_file.h $(SRC_HEADERS)
	@mkdir -p build
	$(CXX) $(CPU_FLAGS) -x c++ $< -o $@ -lm

# the SSD oracle (test/torch_ssd_check.py) compares against what this dumps
build/torch_ssd_dump: test/torch_ssd_dump.cu test/tensor_file.h test/test_util.h $(SRC_HEADERS)
	@mkdir -p build
	$(CXX) $(CPU_FLAGS) -x c++ $< -o $@ -lm
test: build/torch_ssd_dump

test: $(CPU_TESTS) build/torch_dump train_mamba_cpu train_vlm_cpu
	@bash test/run_tests.sh cpu

train_vlm: train_vlm.cu $(SRC_HEADERS) | $(ARCH_CHECK)
	$(if $(BUILD_NOTE),@echo "$(BUILD_NOTE)")
	$(COMPILE)

# CPU-only builds of the trainers, used by the end-to-end CPU tests
train_vlm_cpu: train_vlm.cu $(SRC_HEADERS)
	$(CXX) $(CPU_FLAGS) -x c++ $< -o $@ -lm

train_mamba_cpu: train_mamba.cu $(SRC_HEADERS)
	$(CXX) $(CPU_FLAGS) -x c++ $< -o $@ -lm

GPU_TESTS := $(patsubst test/%.cu,build/%,$(wildcard test/gpu_*.cu))
build/gpu_%: test/gpu_%.cu $(SRC_HEADERS) $(wildcard test/*.h) | $(ARCH_CHECK)
	@mkdir -p build
	$(NVCC) $(NVCC_FLAGS) $< -o $@ $(NVCC_LIBS)

test-gpu: $(GPU_TESTS) train_mamba train_vlm
	@bash test/run_tests.sh gpu

DEV_SRCS := $(wildcard dev/*.cu)
DEV_BINS := $(patsubst dev/%.cu,build/dev_%,$(DEV_SRCS))
build/dev_%: dev/%.cu dev/dev_common.h $(SRC_HEADERS) | $(ARCH_CHECK)
	@mkdir -p build
	$(NVCC) $(NVCC_FLAGS) $< -o $@ $(NVCC_LIBS)
build/dev_matmul: NVCC_LIBS += -lcublasLt
# the backward workbench #includes the forward one (its kernels make hs)
build/dev_selective_scan_backward: dev/selective_scan_forward.cu
dev: $(DEV_BINS)

# the main job: KJV shards, build, train (GPU if present, else CPU), plot
kjv:
	bash data_scripts/train_kjv.sh

# the VLM data: Fashion-MNIST scenes with captions and questions (data_scripts/README.md);
# `make scenes` needs Debian's dataset-fashion-mnist and libstb-dev
.PHONY: scenes
build/make_scenes: data_scripts/make_scenes.cpp $(SRC_HEADERS)
	@mkdir -p build
	$(CXX) $(CPU_FLAGS) $< -o $@ -lm
# the VLM's main job: scenes, build, stages clip -> lm -> align -> instruct, accuracy table
.PHONY: vlm
vlm:
	bash data_scripts/train_vlm.sh

# the VLM efficiency study: visual-token reduction methods x ratios, accuracy, KL, FLOPs, latency
.PHONY: vlm-study
vlm-study:
	bash data_scripts/vlm_study.sh

# the ViT classifier study: Fashion-MNIST items, ToMe / pooling / random at 0.25-0.75, accuracy vs FLOPs and images/s
.PHONY: vit-study
vit-study:
	bash data_scripts/vit_study.sh

# the speed benchmark (GPU): the mamba-130m training step and generation beside the anchors
.PHONY: bench
bench:
	bash data_scripts/bench.sh

# the LoRA study: KJV pretraining, nine fine-tunings on the fortunes, table and plot
.PHONY: lora-study
lora-study:
	bash data_scripts/lora_study.sh

# Mamba-1 vs Mamba-2 vs transformer vs hybrid on the KJV text: one table, one plot
.PHONY: arch-study
arch-study:
	bash data_scripts/arch_study.sh

scenes: build/make_scenes
	./build/make_scenes --out data/scenes
# test/cli_vlm_data.sh runs it
test: build/make_scenes

clean:
	rm -rf build train_mamba train_mamba_cpu train_vlm train_vlm_cpu
