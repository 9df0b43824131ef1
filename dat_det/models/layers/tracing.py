"""Whether a module runs under ``torch.onnx.export``, asked in a way TorchScript accepts."""
import torch


@torch.jit.unused
def onnx_exporting() -> bool:
    """``torch.onnx.is_in_onnx_export()``, kept out of TorchScript (which cannot compile it).

    Call it as ``not torch.jit.is_scripting() and onnx_exporting()``. During export, sizes
    read from ``x.shape`` are traced, so a module should pad or branch by traced amounts there
    instead of by Python decisions that the graph would keep for every input size."""
    return torch.onnx.is_in_onnx_export()
