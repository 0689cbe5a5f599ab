"""Measurement operators ``A`` of the inverse problem ``y = A x + sigma_y n`` (DAVI, Lee et al. 2024),
deepinv style: one ``nn.Module`` per physics, its maths in its docstring.

Every operator maps images ``x`` of shape ``(B, C, H, W)`` (pixels in [-1, 1]) to a
measurement ``y = A x`` and offers

* ``forward(x)``  = ``A x``;
* ``adjoint(y)``  = ``A^T y``, the exact adjoint: ``<A x, y> == <x, A^T y>``;
* ``lift(y)``     = an image-space estimate ``y~`` of ``x`` (the mapper's input), same shape as ``x``;
* ``pinv(y)``     = a right inverse with ``A(pinv(y)) == y`` where one is cheap
  (``has_pinv``); otherwise ``NotImplementedError``;
* ``measure(x, generator)`` = ``A x + sigma_y * n``, ``n`` standard normal on the measured
  entries (exactly zero on the unobserved pixels of the inpainting operators);
* ``measurement_shape`` / ``check_measurement`` for validating user-supplied measurements;
* ``from_config(cfg, resolution, channels)``, the operator for an ``operator:`` config section,
  and ``params()``, a JSON-able dict (stored in export cards) from which
  :func:`operator_from_params` rebuilds an operator giving identical outputs.

Operators are found by name in the registry :data:`OPERATORS` (``{name: class}``, filled by
:func:`register_operator`). ``operator.name`` may also be an import path ``"module:Class"`` to an
:class:`Operator` subclass outside the package (docs/custom_operators.md); such an operator is
stored in export cards under that path. Two operators read data files, so the common cases need
no code: ``deblur`` with ``operator.kernel_file`` (any 2-D blur kernel) and ``inpaint`` with
``operator.mask_file`` (any mask); their params() hold the file's values, so an export works
without the file.

A family of operators (``operator.family``, :class:`OperatorFamily` in ``family.py``) draws one
concrete operator and noise level per training image; :class:`OperatorBatch` holds one batch's.

Any batch size and channel count work, on any device and floating dtype: kernels and
masks are non-persistent buffers cast to the input (``buf.to(x)``) on every call, so
float64 inputs get float64 math. Blur kernels are kept in float64 for that reason.
"""

# isort: off
# The families register in this order, which is the order error messages and docs list them in.
from davi.operators.base import Operator, OperatorError
from davi.operators.registry import OPERATORS, build_operator, operator_class, operator_from_params, register_operator
from davi.operators.files import read_array_file
from davi.operators.blur import Deblur, default_blur, gaussian_kernel
from davi.operators.super_resolution import SuperResolution
from davi.operators.inpainting import BoxInpaint, Inpaint, RandomInpaint
from davi.operators.denoise import Denoise
# After the operators: a family is built from registered ones.
from davi.operators.family import FamilyMember, OperatorBatch, OperatorFamily, family_from_config, family_spec
# isort: on

__all__ = [
    "OperatorError",
    "Operator",
    "Deblur",
    "SuperResolution",
    "BoxInpaint",
    "RandomInpaint",
    "Inpaint",
    "Denoise",
    "OPERATORS",
    "register_operator",
    "operator_class",
    "build_operator",
    "operator_from_params",
    "default_blur",
    "gaussian_kernel",
    "read_array_file",
    "OperatorFamily",
    "FamilyMember",
    "OperatorBatch",
    "family_from_config",
    "family_spec",
]
