"""Fast construction of the codec's frozen dataclasses by the decoders.

A frozen dataclass's generated ``__init__`` stores each field through ``object.__setattr__``,
which costs about as much as decoding the field. :func:`maker` returns a function that takes
every field positionally and stores them through the slots' member descriptors instead: the
instance is the same (same type, fields, equality, hash, repr) in about half the time. Decoders
use it; everybody else uses the classes' ordinary constructors.
"""

from dataclasses import fields


def maker(cls):
    """A ``make(field1, field2, ...)`` for the frozen, slotted dataclass ``cls`` (all fields,
    in declaration order, no defaults, no ``__post_init__``)."""
    if not hasattr(cls, "__slots__") or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} is not a slotted dataclass without __post_init__")
    names = [f.name for f in fields(cls)]
    env = {"_new": object.__new__, "_cls": cls}
    lines = [f"def make({', '.join(names)}):", "    o = _new(_cls)"]
    for name in names:
        env[f"_set_{name}"] = getattr(cls, name).__set__
        lines.append(f"    _set_{name}(o, {name})")
    lines.append("    return o")
    exec("\n".join(lines), env)  # noqa: S102 - fixed source built from field names
    make = env["make"]
    make.__doc__ = f"Build a {cls.__name__} from all its fields (decoders only)."
    return make
