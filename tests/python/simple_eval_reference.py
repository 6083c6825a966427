"""PyPI simpleeval with the function table ComfyUI's ComfyMathExpression gives it
(comfy_extras/nodes_math.py: sum over a list or its arguments, pow with an exponent cap, the
math functions), and that node's result checks.

Reads [[expression, {name: value}], …] on stdin (values typed by JSON: int, float, bool; the
list `values` is the named values in order); prints per case [float, int, bool] or the raised
exception's class name."""
import json
import math
import sys

from simpleeval import simple_eval


def variadic_sum(*args):
    if len(args) == 1 and hasattr(args[0], "__iter__"):
        return sum(args[0])
    return sum(args)


def capped_pow(base, exp):
    if abs(exp) > 4000:
        raise ValueError("exponent too large")
    return pow(base, exp)


FUNCTIONS = {"sum": variadic_sum, "min": min, "max": max, "abs": abs, "round": round,
             "pow": capped_pow, "sqrt": math.sqrt, "ceil": math.ceil, "floor": math.floor,
             "log": math.log, "log2": math.log2, "log10": math.log10, "sin": math.sin,
             "cos": math.cos, "tan": math.tan, "int": int, "float": float}


def run(expression, names):
    context = dict(names)
    context["values"] = list(names.values())
    try:
        result = simple_eval(expression, names=context, functions=FUNCTIONS)
        if not isinstance(result, (int, float)):
            return "ValueError"
        value = float(result)
        if not math.isfinite(value):
            return "ValueError"
        return [value, int(result), bool(result)]
    except Exception as e:  # the class is what the node reports
        return type(e).__name__


print(json.dumps([run(e, n) for e, n in json.load(sys.stdin)]))
