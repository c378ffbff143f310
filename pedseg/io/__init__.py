"""Volume I/O with exact geometry: the only part of pedseg that imports nibabel or SimpleITK.

Reading reorients every volume to canonical RAS+ (:class:`Volume`); :func:`write_like` undoes that
and writes results with the input's exact on-disk shape, affine, qform/sform and codes.
"""

from pedseg.io.dicom import DicomSeries, list_dicom_series
from pedseg.io.geometry import ItkGeometry
from pedseg.io.labels import check_pair, read_label
from pedseg.io.readers import is_volume_path, read_volume
from pedseg.io.volume import DEFAULT_MAX_BYTES, SourceGeometry, Volume
from pedseg.io.writers import write_like, write_volume

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DicomSeries",
    "ItkGeometry",
    "SourceGeometry",
    "Volume",
    "check_pair",
    "is_volume_path",
    "list_dicom_series",
    "read_label",
    "read_volume",
    "write_like",
    "write_volume",
]
