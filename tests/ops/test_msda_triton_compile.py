"""The Triton kernels lower to PTX and a cubin for Hopper without a GPU (ahead of time).

The interpreter checks what the kernels compute; this checks that the compiled path, which
the interpreter skips, accepts them (types, constexpr branches, atomics) for each dtype.
"""
import pytest

triton = pytest.importorskip('triton')

from dat_det.ops import msda_triton  # noqa: E402

if msda_triton.INTERPRET_MODE:
    pytest.skip('kernels were defined in interpreter mode', allow_module_level=True)

try:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
except ImportError:  # pragma: no cover - depends on the triton version
    pytest.skip('this triton has no ahead-of-time compiler API', allow_module_level=True)

HOPPER = GPUTarget('cuda', 90, 32)
SHAPE_CONSTANTS = dict(HEADS=8, C=32, LEVELS=4, POINTS=4, BLOCK_Q=32, BLOCK_C=32)
INDEX_ARGS = {'shapes_ptr': '*i64', 'starts_ptr': '*i64'}


def _compile(kernel, signature, constants):
    # a launch marks 16-byte aligned pointers (every torch allocation) as such, which turns
    # the gathers into vector loads: compile that variant, the one that runs
    aligned = {(kernel.arg_names.index(name),): [['tt.divisibility', 16]]
               for name, kind in signature.items() if kind.startswith('*')}
    try:
        return triton.compile(ASTSource(kernel, signature, constants, aligned), target=HOPPER,
                              options={'num_warps': 4})
    except RuntimeError as error:  # no CUDA backend / ptxas shipped with this triton
        if 'ptxas' in str(error) or 'backend' in str(error).lower():
            pytest.skip(f'cannot compile for sm_90 here: {error}')
        raise


@pytest.mark.slow
@pytest.mark.parametrize('dtype', ['fp32', 'bf16', 'fp64'])
def test_kernels_compile_for_sm90(dtype):
    tl = triton.language
    tensor = '*' + dtype
    accumulate = tl.float64 if dtype == 'fp64' else tl.float32
    grad_value = '*fp64' if dtype == 'fp64' else '*fp32'
    ints = {'num_values': 'i32', 'num_queries': 'i32', 'query_bucket': 'i32'}
    fwd_signature = {'value_ptr': tensor, **INDEX_ARGS, 'loc_ptr': tensor,
                     'attn_ptr': tensor, 'out_ptr': tensor, **ints}
    fwd_constants = dict(SHAPE_CONSTANTS, ACC=accumulate)
    fwd_signature.update({name: 'constexpr' for name in fwd_constants})
    compiled = _compile(msda_triton._msda_fwd_kernel, fwd_signature, fwd_constants)
    assert 'ld.global.v' in compiled.asm['ptx']  # vectorized gathers

    bwd_signature = {'value_ptr': tensor, **INDEX_ARGS, 'loc_ptr': tensor,
                     'attn_ptr': tensor, 'grad_out_ptr': tensor, 'grad_value_ptr': grad_value,
                     'tail_ptr': grad_value, 'grad_loc_ptr': tensor, 'grad_attn_ptr': tensor,
                     **ints, 'tail_start': 'i32'}
    bwd_constants = dict(SHAPE_CONSTANTS, ACC=accumulate, GRAD_VALUE=True, REPLICAS=4)
    bwd_signature.update({name: 'constexpr' for name in bwd_constants})
    compiled = _compile(msda_triton._msda_bwd_kernel, bwd_signature, bwd_constants)
    assert 'red.global' in compiled.asm['ptx'] or 'atom.global' in compiled.asm['ptx']


def test_triton_operators_decompose_into_the_kernels():
    """Under AOT autograd (what torch.compile runs) the Triton backend's operators, forward
    and backward, become the kernels themselves (``triton_kernel_wrapper_functional`` nodes
    the compiler can see), not opaque calls. Traced on fake CUDA tensors: no GPU needed."""
    import torch
    from torch._functorch.aot_autograd import aot_function
    from torch._subclasses.fake_tensor import FakeTensorMode

    from tests.helpers.msda_inputs import make_msda_inputs

    inputs = make_msda_inputs(1, ((5, 7), (1, 1)), 2, 8, 2, 5, dtype=torch.float32,
                              requires_grad=False)
    names = ('value', 'spatial_shapes', 'level_start_index', 'sampling_locations',
             'attention_weights')
    mode = FakeTensorMode()
    with mode:
        args = [torch.empty(inputs[k].shape, dtype=inputs[k].dtype, device='cuda')
                for k in names]
        grad_out = torch.empty(1, 5, 16, device='cuda')
    ops = torch.ops.dat_det
    graphs = {}
    for name, fn in (
            ('forward', lambda *a: ops.multi_scale_deformable_attn_triton(*a)),
            ('backward', lambda g, *a: ops.multi_scale_deformable_attn_triton_backward(
                g, *a, True))):
        traced = aot_function(fn, fw_compiler=lambda gm, _, n=name: graphs.setdefault(n, gm))
        with mode:
            traced(*(([grad_out] if name == 'backward' else []) + args))
    for name, graph in graphs.items():
        targets = [str(node.target) for node in graph.graph.nodes]
        assert any('triton_kernel_wrapper_functional' in t for t in targets), (name, targets)
        assert not any('dat_det' in t for t in targets), (name, targets)
