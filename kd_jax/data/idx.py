"""The IDX file format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/), plain or gzip-compressed.

An IDX file is a header and the array's values, big-endian:

    bytes 0-1   0x00 0x00
    byte  2     type code: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte  3     number of dimensions d
    then        d uint32 sizes, then prod(sizes) values of the type, row-major.
"""

import gzip

import numpy as np

from kd_jax.errors import UserError

TYPE_CODES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


def read(path: str) -> np.ndarray:
  """The array stored in the IDX file `path` (gzip-compressed or not, told by its first bytes), in native byte order.

  Raises:
    UserError: the file is not an IDX file, or holds fewer or more values than its header says.
  """
  with open(path, "rb") as file:
    content = file.read()
  if content[:2] == _GZIP_MAGIC:
    content = gzip.decompress(content)
  if len(content) < 4 or content[:2] != b"\x00\x00" or content[2] not in TYPE_CODES:
    raise UserError(f"{path}: not an IDX file (its header does not start with 0x00 0x00, a type code "
                    f"({', '.join(hex(code) for code in TYPE_CODES)}) and a number of dimensions)")
  dtype, num_dims = np.dtype(TYPE_CODES[content[2]]), content[3]
  data_start = 4 + 4 * num_dims
  shape = tuple(int(size) for size in np.frombuffer(content[4:data_start], ">u4"))
  expected = int(np.prod(shape)) * dtype.itemsize
  if len(shape) != num_dims or len(content) - data_start != expected:
    raise UserError(f"{path}: truncated or padded IDX file (its header gives shape {shape} of {dtype.name}: "
                    f"{expected} bytes of values, the file holds {max(len(content) - data_start, 0)})")
  return np.frombuffer(content, dtype, offset=data_start).reshape(shape).astype(dtype.newbyteorder("="))
