"""Infotext quoting and parsing with the WebUI's grammar: `Key: value` pairs on the last line,
keys made of word characters, spaces, '-' and '/', values JSON-quoted when they hold ',', ':' or
a newline."""
from __future__ import annotations

import json
import re

PARAM_RE = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
SIZE_RE = re.compile(r"^(\d+)x(\d+)$")


def quote(text):
    if ',' not in str(text) and '\n' not in str(text) and ':' not in str(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_generation_parameters(text: str, skip_fields=None) -> dict:
    res: dict = {}
    *lines, last = text.strip().split("\n")
    if len(PARAM_RE.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt, negative, in_negative = [], [], False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    for key, value in PARAM_RE.findall(last):
        value = unquote(value) if value[:1] == '"' and value[-1:] == '"' else value
        m = SIZE_RE.match(value)
        if m:
            res[f"{key}-1"], res[f"{key}-2"] = m.group(1), m.group(2)
        else:
            res[key] = value
    res["Prompt"] = "\n".join(prompt)
    res["Negative prompt"] = "\n".join(negative)
    return res


def paste(fields: list, infotext: str) -> list:
    """What the WebUI's paste button computes for `fields` [(component, key-or-callable)]: the new
    value per component (None = left unchanged), converted like the WebUI does."""
    from modules import script_callbacks

    params = parse_generation_parameters(infotext)
    script_callbacks.infotext_pasted_callback(infotext, params)
    out = []
    for component, key in fields:
        v = key(params) if callable(key) else params.get(key)
        if isinstance(v, dict):  # a gr.update(...): the WebUI passes it through as is
            out.append(v.get("value"))
            continue
        if v is None:
            out.append(None)
            continue
        kind = type(component.value)
        try:
            if kind is bool and v == "False":
                out.append(False)
            elif kind is int:
                out.append(float(v))
            else:
                out.append(kind(v) if component.value is not None else v)
        except (TypeError, ValueError):
            out.append(None)
    return out
