"""The functions behind ``minidl.nn.functional`` beyond ``minidl.functional``'s core set:
convolutions with every option, pooling and resampling, normalisations and distances, more
activations, losses and dropouts, bilinear. They build on ``minidl.functional`` and
``minidl.ops``, one module per family."""
