"""Names the command line needs before anything heavy is imported: the default model and the dtype names."""

DEFAULT_MODEL = "smollm2-135m"
DTYPE_NAMES = ("float32", "bfloat16", "float16")
