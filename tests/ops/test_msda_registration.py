"""The op is registered operators: ``torch.library.opcheck`` on every backend that runs here,
and on the ``gather`` backend's own operator (its forward hands its taps to its backward)."""
import pytest
import torch

from dat_det.ops import BACKENDS, OP_NAME, TRACED_OP_NAMES, multi_scale_deformable_attn
from dat_det.ops.msda_backends import GATHER_OP_NAME
from tests.helpers.msda_checks import INPUT_NAMES, OPCHECK_CASE, assert_opcheck, registered_op
from tests.helpers.msda_inputs import make_msda_inputs


@pytest.mark.parametrize('backend', ['pytorch', 'gather'])
def test_opcheck(backend):
    assert_opcheck(backend)


def test_opcheck_of_the_gather_operator():
    for dtype in (torch.float32, torch.float64):
        inputs = make_msda_inputs(*OPCHECK_CASE, dtype=dtype)
        results = torch.library.opcheck(registered_op(GATHER_OP_NAME),
                                        tuple(inputs[k] for k in INPUT_NAMES))
        assert set(results.values()) == {'SUCCESS'}, results


def test_public_schema_has_the_mmcv_arguments_and_a_backend():
    schema = registered_op(OP_NAME)._schema
    assert [a.name for a in schema.arguments] == [*INPUT_NAMES, 'backend']
    assert [str(r.type) for r in schema.returns] == ['Tensor']
    assert set(BACKENDS) == {'pytorch', 'gather', 'triton'}
    assert TRACED_OP_NAMES[0] == OP_NAME and GATHER_OP_NAME in TRACED_OP_NAMES


def _grads(fn, inputs, grad_out):
    leaves = [inputs['value'], inputs['sampling_locations'], inputs['attention_weights']]
    return torch.autograd.grad(fn(*(inputs[k] for k in INPUT_NAMES)), leaves, grad_out)


def test_saved_taps_give_the_recomputed_gradients():
    """The gather operator's backward from its forward's taps equals the public operator's,
    which recomputes them."""
    inputs = make_msda_inputs(*OPCHECK_CASE, dtype=torch.float64)
    grad_out = torch.randn(2, 4, 2 * 8, dtype=torch.float64)  # (B, Lq, heads * C)
    recomputed = _grads(lambda *a: torch.ops.dat_det.multi_scale_deformable_attn(*a, 'gather'),
                        inputs, grad_out)
    saved = _grads(lambda *a: torch.ops.dat_det.multi_scale_deformable_attn_gather(*a)[0],
                   inputs, grad_out)
    for a, b in zip(saved, recomputed):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-13)


def test_the_function_takes_the_gather_operator_when_a_gradient_is_needed():
    """Traced, a call is one node: the gather operator with gradients, else the public one."""
    inputs = make_msda_inputs(*OPCHECK_CASE, dtype=torch.float32)

    def nodes(grad: bool):
        args = {k: (v.detach().requires_grad_(grad) if v.is_floating_point() else v)
                for k, v in inputs.items()}
        graph = torch.jit.trace(
            lambda *a: multi_scale_deformable_attn(*a, backend='gather'),
            tuple(args[k] for k in INPUT_NAMES), check_trace=False).graph
        return [n.kind() for n in graph.nodes() if n.kind().startswith('dat_det::')]

    assert nodes(grad=False) == [OP_NAME]
    assert nodes(grad=True) == [GATHER_OP_NAME]


@pytest.mark.parametrize('op_name', [OP_NAME, GATHER_OP_NAME])
def test_fake_tensor_output_metadata(op_name):
    """Under FakeTensorMode (what the compiler traces with) the outputs have the real op's
    shapes and dtypes, without reading any data; half inputs come out as the value's dtype
    (the taps of the gather operator stay in float32)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    inputs = make_msda_inputs(*OPCHECK_CASE, dtype=torch.float32, requires_grad=False)
    extra = ('gather', ) if op_name == OP_NAME else ()
    real = registered_op(op_name)(*(inputs[k] for k in INPUT_NAMES), *extra)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake_inputs = {k: mode.from_tensor(v) for k, v in inputs.items()}
        fake_inputs['value'] = fake_inputs['value'].to(torch.bfloat16)
        fake = registered_op(op_name)(*(fake_inputs[k] for k in INPUT_NAMES), *extra)
    if op_name == OP_NAME:  # one output
        real, fake = (real, ), (fake, )
    assert fake[0].shape == real[0].shape and fake[0].dtype == torch.bfloat16
    assert [(t.shape, t.dtype) for t in fake[1:]] == [(t.shape, t.dtype) for t in real[1:]]


@pytest.mark.parametrize('backend', ['pytorch', 'gather'])
@pytest.mark.parametrize('grad', [False, True], ids=['no-grad', 'grad'])
def test_compiled_call_is_one_node(backend, grad):
    """``torch.compile(fullgraph=True)`` captures a call as one operator node (no graph
    break), and the compiled call gives the eager output and gradients."""
    torch._dynamo.reset()
    inputs = make_msda_inputs(*OPCHECK_CASE, dtype=torch.float32, requires_grad=grad)
    graphs = []

    def capture(graph_module, _example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    def call(*args):
        return multi_scale_deformable_attn(*args, backend=backend)

    args = tuple(inputs[k] for k in INPUT_NAMES)
    out = torch.compile(call, backend=capture, fullgraph=True)(*args)
    nodes = [str(n.target) for g in graphs for n in g.graph.nodes
             if n.op == 'call_function' and 'dat_det' in str(n.target)]
    assert len(graphs) == 1 and len(nodes) == 1, nodes
    expected = (GATHER_OP_NAME if grad and backend == 'gather' else OP_NAME).replace('::', '.')
    assert nodes[0] in (expected, f'{expected}.default'), nodes
    torch.testing.assert_close(out, call(*args))
    if grad:
        leaves = [inputs['value'], inputs['sampling_locations'], inputs['attention_weights']]
        for a, b in zip(torch.autograd.grad(out.sum(), leaves),
                        torch.autograd.grad(call(*args).sum(), leaves)):
            torch.testing.assert_close(a, b)
    torch._dynamo.reset()
