from .shapes import SHAPE_CLASSES, ShapesConfig, generate_shapes_dataset, shapes_dataset_exists

__all__ = ['SHAPE_CLASSES', 'ShapesConfig', 'generate_shapes_dataset', 'shapes_dataset_exists']
