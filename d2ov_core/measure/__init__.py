"""Measuring a conversion: ``verify`` (OpenVINO vs the PyTorch reference, detection by detection),
``evaluate`` (COCO AP) and ``bench`` (speed against Detectron2 eager). They may import every other
package."""
