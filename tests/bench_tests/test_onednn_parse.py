from __future__ import annotations

from bench.onednn import parse

LINES = [
    "onednn_verbose,v1,primitive,info,template:operation,engine,primitive,implementation,x,y,z",
    "onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx10_1_512_amx,"
    "forward_training,src:bf16::blocked:acdb::f0 wei:bf16::blocked:abcd::f0,,"
    "alg:convolution_direct,mb4_ic16oc16_ih1024oh1024kh5sh1dh0ph2_iw1280ow1280kw5sw1dw0pw2,71.5",
    "onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx10_1_512_amx,"
    "forward_training,src:bf16::blocked:acdb::f0 wei:bf16::blocked:abcd::f0,,"
    "alg:convolution_direct,mb4_ic16oc16_ih1024oh1024kh5sh1dh0ph2_iw1280ow1280kw5sw1dw0pw2,36.5",
    "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:f32::blocked:abcd::f0 "
    "dst:bf16::blocked:acdb::f0,,,4x3x1024x1280,2.0",
    "some TensorFlow log line",
]
FPMATH = ("onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core_amx,"
          "forward_training,src:f32::blocked:acdb::f0 wei:f32::blocked:abcd::f0,"
          "attr-fpmath:bf16 attr-scratchpad:user,alg:convolution_direct,"
          "mb4_ic16oc16_ih1024oh1024kh5sh1dh0ph2_iw1280ow1280kw5sw1dw0pw2,50.0")


def test_exec_lines_are_summed_by_kernel_and_shape():
    found = parse(LINES)
    conv = ("convolution", "brg_conv_fwd:avx10_1_512_amx", "forward_training", "bf16",
            "ic16oc16@1024")
    assert found[conv] == (108.0, 2)
    assert found[("reorder", "jit:uni", "undef", "f32", "-")] == (2.0, 1)
    assert len(found) == 2


def test_a_math_mode_set_by_attributes_is_kept_apart_from_plain_fp32():
    found = parse([*LINES, FPMATH])
    assert found[("convolution", "brg_conv_fwd:avx512_core_amx", "forward_training",
                  "f32 (math bf16)", "ic16oc16@1024")] == (50.0, 1)
    assert len(found) == 3
