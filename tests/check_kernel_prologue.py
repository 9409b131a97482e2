#!/usr/bin/env python3
"""Every CUDA kernel of the engine begins with grid_dependency_prologue() (kernels/cuda/launch.h).

With programmatic dependent launch a kernel may start while the kernel before it still runs;
the prologue's griddepcontrol.wait is what keeps it from reading that kernel's outputs early.
A kernel whose first statement is anything else would race on a GPU only, and only on that
route, so this check reads the sources: for each __global__ function in the given files, the
first statement of its body must be the prologue. Exit status 1 names each kernel that is not.

  check_kernel_prologue.py FILE.cu ...
"""
import re
import sys

PROLOGUE = "grid_dependency_prologue();"


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def kernels(text):
    """(name, line, first statement) of each __global__ function defined in text."""
    for match in re.finditer(r"\b__global__\b", text):
        brace = text.find("{", match.end())
        semicolon = text.find(";", match.end())
        if brace < 0 or (0 <= semicolon < brace):
            continue  # a declaration, not a definition
        head = text[match.end():brace]
        names = re.findall(r"([A-Za-z_]\w*)\s*\(", head)
        name = next((n for n in names if n != "__launch_bounds__"), "?")
        body = text[brace + 1:]
        first = body.lstrip().split("\n", 1)[0].strip()
        yield name, text.count("\n", 0, match.start()) + 1, first


def main(paths):
    bad, count = [], 0
    for path in paths:
        with open(path, encoding="utf-8") as f:
            text = strip_comments(f.read())
        for name, line, first in kernels(text):
            count += 1
            if not first.startswith(PROLOGUE):
                bad.append(f"{path}:{line}: kernel {name} begins with '{first}', not {PROLOGUE}")
    for message in bad:
        print(message)
    print(f"{count} kernels checked, {len(bad)} without the prologue")
    return 1 if bad or count == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
