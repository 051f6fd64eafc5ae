"""Event time: watermark strategies."""

from .watermarks import WATERMARK_MIN, Ascending, BoundedOutOfOrderness, ProcessingTime, WatermarkStrategy

__all__ = ["WATERMARK_MIN", "Ascending", "BoundedOutOfOrderness", "ProcessingTime", "WatermarkStrategy"]
