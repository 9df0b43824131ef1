"""Export a module to ONNX with a dynamic image size, check the graph, compare onnxruntime."""
import warnings
from typing import Callable, Dict, List, Sequence

import numpy as np
import torch
from torch import Tensor, nn

MIN_OPSET = 16  # GridSample


def export_onnx(module: nn.Module, image: Tensor, path: str, output_names: Sequence[str],
                opset: int = 17) -> None:
    """Trace ``module(image)`` into ``path`` and check it; height and width stay dynamic.

    Raises:
        ValueError: ``opset`` below 16 (no ``GridSample``).
    """
    import onnx

    if opset < MIN_OPSET:
        raise ValueError(f'opset {opset} has no GridSample; use >= {MIN_OPSET}')
    dynamic = {'image': {2: 'height', 3: 'width'}}
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer warns about every Python int it records; the sizes that matter are traced
        warnings.simplefilter('ignore')
        torch.onnx.export(module, (image, ), path, dynamo=False, opset_version=opset,
                          input_names=['image'], output_names=list(output_names),
                          dynamic_axes=dynamic, do_constant_folding=True)
    onnx.checker.check_model(onnx.load(path), full_check=True)


def compare_with_onnxruntime(path: str, reference: Callable[[Tensor], Sequence[Tensor]],
                             images: Sequence[Tensor]) -> List[Dict[str, float]]:
    """Max absolute difference per output between onnxruntime (CPU) and ``reference`` (the
    PyTorch model) for each image ``(1, 3, H, W)``."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    names = [o.name for o in session.get_outputs()]
    results = []
    for image in images:
        with torch.no_grad():
            expected = reference(image)
        expected = expected if isinstance(expected, (tuple, list)) else (expected, )
        actual = session.run(None, {'image': image.cpu().numpy()})
        if len(actual) != len(expected):
            raise ValueError(f'onnx graph has {len(actual)} outputs, PyTorch {len(expected)}')
        results.append({name: float(np.abs(a - e.cpu().numpy()).max())
                        for name, a, e in zip(names, actual, expected)})
    return results
