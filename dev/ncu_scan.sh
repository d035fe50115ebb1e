#!/usr/bin/env bash
# Nsight Compute on the best selective-scan kernels at the benchmark shape
# (B=8, L=1024, E=1536, N=16, bf16): what bounds them. Needs build/dev_* (make dev).
#   bash dev/ncu_scan.sh [fwd_version] [bwd_version]      (defaults 7 and 9)
# Backward versions 5-9 are instances of one kernel template, scan_bwd_v5_kernel;
# the binary runs only the version asked for, so the name still picks it out.
# Reports go to $OUT (or out/) as ncu_fwd.txt and ncu_bwd.txt.
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-out}; mkdir -p "$OUT"
fwd=${1:-7}; bwd=${2:-9}
bwd_kernel=scan_bwd_v${bwd}_kernel; [ "$bwd" -ge 5 ] && bwd_kernel=scan_bwd_v5_kernel
SECTIONS="--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis"
# The binaries first validate at small odd shapes (a few launches each), then
# time L=1024 (3 warm-up + 20 timed launches): skipping 12 bf16 launches lands
# in the L=1024 benchmark.
ncu --clock-control none --kernel-name-base demangled -k "regex:scan_fwd_v${fwd}_kernel<__nv_bfloat16" \
    --launch-skip 12 -c 1 $SECTIONS build/dev_selective_scan_forward "$fwd" > "$OUT/ncu_fwd.txt" 2>&1
ncu --clock-control none --kernel-name-base demangled -k "regex:${bwd_kernel}<__nv_bfloat16" \
    --launch-skip 12 -c 1 $SECTIONS build/dev_selective_scan_backward "$bwd" > "$OUT/ncu_bwd.txt" 2>&1
for f in "$OUT/ncu_fwd.txt" "$OUT/ncu_bwd.txt"; do
    echo "== $f"
    grep -E "Duration|Memory Throughput|DRAM Throughput|Compute \(SM\) Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Block Limit|Warp Cycles Per Issued|Issue Slots Busy|No Eligible|Stall|L1/TEX Hit|L2 Hit" "$f" | head -30
    grep -E "OPT|WRN" "$f" | head -6
done
