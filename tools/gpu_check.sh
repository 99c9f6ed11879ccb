#!/usr/bin/env bash
# On a CUDA machine: the GPU tests of the focused-linear op and the numbers BENCHMARKS.md reports, by part, each
# part's output into $GPU_CHECK_OUT (default work_dirs/gpu_check). Parts and their time on an H100:
#   tests    pytest -m gpu of the ops and the agent layer (~7 min: 402 s on an H100 in session 24)
#   tests-compiled  pytest -m gpu of whole models trained under inductor at new batch and image sizes (>5 min:
#            three of its four tests took 300 s on an H200)
#   op       the op table, all methods (~3 min)
#   models   whole-model table, eager + CUDA graphs (~5 min)
#   nan      the 200-step NaN check: the five FLatten / Agent models, bf16 and fp16 AMP (GradScaler; ~5.5 min on an
#            H100, 30 s a row; apart from `models` so that each fits a 10-minute device call)
#   compile  whole-model table under torch.compile for FLatten-Swin-T, Agent-Swin-T and Swin-T (~6 min)
#   compile-cg  the same under torch.compile(mode='reduce-overhead'): CUDA graphs, no host in the step (>6 min
#            on an H100 in session 24: Swin-T's compiled rows were not reached in 380 s)
#            (a setting that raises is an 'error' cell and fails the part)
#   compile-others  the same table's compiled rows for the PVT, CSwin and DeiT models (FLatten-PVT-T, Agent-PVT-T,
#            FLatten-CSwin-T, PVT-v2-b1, DeiT-T; > 570 s on an H100 in session 25, whose run, with FLatten-PVT-T
#            recompiling every call, reached four rows in that time)
#   agent-sdpa  Agent-Swin-T vs Swin-T compiled, with Agent's compiled training on SDPA instead of the Triton kernels
#            (LINATTN_AGENT_FUSED=0 LINATTN_AGENT_COMPILED_SDPA=1; with the kernels off the default is matmuls; its
#            training cell failed in sessions 15 and 16) (~4 min)
#   profile  per-kernel CUDA time of FLatten-Swin-T vs Swin-T training, eager and compiled, and the compiled step's
#            host ops by their own CPU time (~3 min)
#   layernorm  GPU tests of the fused LayerNorm, profiles and interleaved A/B native vs fused (~3 min)
#   parts    per-stage / per-block GPU time, SDPA backends, DWC, the op's splits, the agent steps' routes in training
#            (tools/benchmark_parts.py, ~3 min)
#   agent-routes  the last of those alone: Agent-Swin-T's attention steps trained on the Triton kernels, on SDPA or
#            as matmuls, per stage (~1 min; session 18 on an H100: kernels 0.35 ms at stage 1, SDPA 2.87)
#   agent-tiles  the agent kernels' launch settings swept at those shapes (kernels.CONFIG_OVERRIDE; ~1.5 min)
#   agent-kernels  the fused agent step's GPU time per kernel at those shapes (torch.profiler; <1 min)
#   agent-inductor  compiled training of Agent-Swin-T and Swin-T profiled with inductor's layout-optimisation
#            decision per graph and the source of each model's three slowest inductor kernels (~4 min; session 22
#            found layout optimisation on for Agent-Swin-T's graph on torch 2.11: its DWC custom op was not taken)
#   agent-profile  per-kernel CUDA time of Agent-Swin-T vs Swin-T training, eager and compiled (~5 min: its
#            compiled half took ~4 min in session 19)
#
#   bash tools/gpu_check.sh                  # every part, in this order (longer than one 10-minute device call)
#   bash tools/gpu_check.sh tests op         # some parts
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the tools import linattn_vision from this checkout
out=${GPU_CHECK_OUT:-work_dirs/gpu_check}
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(tests tests-compiled op models nan compile profile)
mkdir -p "$out"
python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "gpu_check.sh needs a CUDA GPU")' || exit 2
status=0
for part in "${parts[@]}"; do
    case $part in
        # (tests/conftest.py prints a failed GPU test's reason as it fails: a run cut by its time limit still shows it)
        tests) python -m pytest -q -rfE --tb=short tests/ops/test_focused_linear.py tests/ops/test_depthwise_conv.py \
                   tests/ops/test_softmax_attention.py tests/ops/test_agent_kernels.py tests/layers/test_agent.py \
                   -m gpu -p no:cacheprovider ;;
        tests-compiled) python -m pytest -q -rfE --tb=short tests/models/test_compiled_training.py -m gpu \
                            -p no:cacheprovider ;;
        op) python tools/benchmark_attention.py --reps 20 --host ;;
        models) python tools/benchmark_models.py --graph ;;
        nan) python tools/benchmark_models.py --nan-only --nan-steps 200 --nan-dtypes bf16 fp16 ;;
        compile) python tools/benchmark_models.py --models flatten_swin_t agent_swin_t swin_tiny_patch4_window7_224 \
                     --compile flatten_swin_t agent_swin_t swin_tiny_patch4_window7_224 --sizes 1024 ;;
        compile-cg) python tools/benchmark_models.py --models flatten_swin_t agent_swin_t swin_tiny_patch4_window7_224 \
                        --compile-cudagraphs flatten_swin_t agent_swin_t swin_tiny_patch4_window7_224 --sizes 1024 ;;
        compile-others) python tools/benchmark_models.py --no-eager --sizes 1024 --models flatten_pvt_t agent_pvt_t \
                            flatten_cswin_t pvt_v2_b1 deit_tiny_patch16_224 --compile ;;
        agent-sdpa) LINATTN_AGENT_FUSED=0 LINATTN_AGENT_COMPILED_SDPA=1 python tools/benchmark_models.py \
                        --models agent_swin_t swin_tiny_patch4_window7_224 \
                        --compile agent_swin_t swin_tiny_patch4_window7_224 --sizes 1024 ;;
        profile) python tools/profile_model.py flatten_swin_t swin_tiny_patch4_window7_224 --train &&
                 python tools/profile_model.py flatten_swin_t swin_tiny_patch4_window7_224 --train --compile \
                     --host-rows 30 ;;
        layernorm) python -m pytest -q tests/ops/test_layer_norm.py -m gpu -p no:cacheprovider &&
                   python tools/profile_model.py agent_swin_t flatten_swin_t swin_tiny_patch4_window7_224 \
                       --size 1024 --features --rows 6 --fused-layer-norm &&
                   python tools/benchmark_models.py --layer-norm-ab flatten_swin_t agent_swin_t \
                       swin_tiny_patch4_window7_224 ;;
        parts) python tools/benchmark_parts.py ;;
        agent-routes) python tools/benchmark_parts.py agent ;;
        agent-tiles) python tools/benchmark_parts.py agent_tiles ;;
        agent-kernels) python tools/benchmark_parts.py agent_kernels ;;
        agent-inductor) python tools/profile_model.py agent_swin_t swin_tiny_patch4_window7_224 --train --compile \
                            --rows 14 --inductor-report 3 ;;
        agent-profile) python tools/profile_model.py agent_swin_t swin_tiny_patch4_window7_224 --train --rows 14 &&
                       python tools/profile_model.py agent_swin_t swin_tiny_patch4_window7_224 --train --compile \
                           --rows 14 ;;
        *) echo "unknown part '$part' (tests, tests-compiled, op, models, nan, compile, compile-cg, compile-others, agent-sdpa, profile, layernorm, parts, agent-routes, agent-tiles, agent-kernels, agent-profile, agent-inductor)" >&2
           exit 2 ;;
    esac 2>&1 | tee "$out/$part.txt"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done
echo "results in $out"
exit $status
