#!/usr/bin/env python3
"""Generate optimizer-core/src/settings/flag_table.rs from llama.cpp's common/arg.cpp.

Usage: scripts/gen_server_flags.py /path/to/llama.cpp > optimizer-core/src/settings/flag_table.rs

It reads every `add_opt(common_arg(...))` of `common_params_parser_init` and keeps the options that
llama-server registers (arg.cpp:1438-1444: in LLAMA_EXAMPLE_SERVER or LLAMA_EXAMPLE_COMMON, not
excluded from LLAMA_EXAMPLE_SERVER), with every spelling, the negative spellings, the value count
(from the handler's signature) and the environment variable.
"""
import re
import sys


def skip_string(src, i):
    """src[i] is '"'; return the index after the closing quote."""
    i += 1
    while src[i] != '"':
        i += 2 if src[i] == '\\' else 1
    return i + 1


def skip_char(src, i):
    i += 1
    while src[i] != "'":
        i += 2 if src[i] == '\\' else 1
    return i + 1


def match_paren(src, i):
    """src[i] is an opening bracket; return the index of its match."""
    pairs = {'(': ')', '{': '}', '[': ']'}
    stack = [pairs[src[i]]]
    i += 1
    while stack:
        c = src[i]
        if c == '"':
            i = skip_string(src, i)
            continue
        if c == "'":
            i = skip_char(src, i)
            continue
        if src.startswith('//', i):
            i = src.index('\n', i)
            continue
        if src.startswith('/*', i):
            i = src.index('*/', i) + 2
            continue
        if c in pairs:
            stack.append(pairs[c])
        elif c in ')}]':
            assert c == stack.pop(), (c, src[i - 80:i + 20])
        i += 1
    return i - 1


def split_top(src):
    """Split on commas at bracket depth 0."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(src):
        c = src[i]
        if c == '"':
            i = skip_string(src, i)
            continue
        if c == "'":
            i = skip_char(src, i)
            continue
        if src.startswith('//', i):
            i = src.index('\n', i)
            continue
        if c in '({[':
            depth += 1
        elif c in ')}]':
            depth -= 1
        elif c == ',' and depth == 0:
            parts.append(src[start:i].strip())
            start = i + 1
        i += 1
    parts.append(src[start:].strip())
    return parts


def strip_comments(src):
    out, i = [], 0
    while i < len(src):
        if src[i] == '"':
            j = skip_string(src, i)
            out.append(src[i:j])
            i = j
        elif src.startswith('//', i):
            i = src.find('\n', i)
            i = len(src) if i < 0 else i
        else:
            out.append(src[i])
            i += 1
    return ''.join(out)


def strings_in(src):
    src = strip_comments(src)
    return re.findall(r'"((?:[^"\\]|\\.)*)"', src)


def main():
    root = sys.argv[1]
    src = open(f'{root}/common/arg.cpp', encoding='utf-8').read()
    start = src.index('common_params_context common_params_parser_init(')
    end = src.index('void common_params_add_preset_options(')
    body = src[start:end]
    offset = src[:start].count('\n')

    mmproj = re.search(r'mmproj_examples = \{([^}]*)\}', src)
    mmproj_examples = [e.strip() for e in mmproj.group(1).split(',') if e.strip()]

    options = []
    for m in re.finditer(r'add_opt\(common_arg\(', body):
        open_ctor = m.end() - 1
        close_ctor = match_paren(body, open_ctor)
        close_add = match_paren(body, m.end() - len('common_arg(') - 1)
        line = offset + body[:m.start()].count('\n') + 1
        # The `else` branch of `if (ex == LLAMA_EXAMPLE_SERVER)` (arg.cpp:2544) is not llama-server's.
        before = body[:m.start()].rstrip()
        if before.endswith('} else {') and 'LLAMA_EXAMPLE_SERVER' in body[m.start() - 900:m.start()]:
            continue
        ctor = split_top(body[open_ctor + 1:close_ctor])
        chain = body[close_ctor + 1:close_add]
        args = strings_in(ctor[0])
        neg = []
        if len(ctor) > 1 and ctor[1].startswith('{'):
            neg = strings_in(ctor[1])
        lam = ctor[-1]
        sig = lam[lam.index('(') + 1:match_paren(lam, lam.index('('))]
        sig_params = [p.strip() for p in sig.split(',')]
        if len(sig_params) == 1:
            kind = 'Void'
        elif len(sig_params) == 3:
            kind = 'TwoStrings'
        elif 'string' in sig_params[1]:
            kind = 'Str'
        elif re.match(r'int\b', sig_params[1]):
            kind = 'Int'
        elif re.match(r'bool\b', sig_params[1]):
            kind = 'Bool'
        else:
            raise SystemExit(f'arg.cpp:{line}: unknown handler signature {sig!r}')
        examples = re.search(r'\.set_examples\(\{([^}]*)\}\)', chain)
        if examples:
            examples = [e.strip() for e in examples.group(1).split(',')]
        elif '.set_examples(mmproj_examples)' in chain:
            examples = mmproj_examples
        elif '.set_examples(' in chain:
            raise SystemExit(f'arg.cpp:{line}: unknown set_examples argument')
        else:
            examples = ['LLAMA_EXAMPLE_COMMON']
        excludes = re.search(r'\.set_excludes\(\{([^}]*)\}\)', chain)
        excludes = [e.strip() for e in excludes.group(1).split(',')] if excludes else []
        env = re.search(r'\.set_env\("([^"]*)"\)', chain)
        env = env.group(1) if env else None
        removed = re.search(r'arg_removed\("((?:[^"\\]|\\.)*)"\)', lam)
        removed = removed.group(1) if removed else None
        if ('LLAMA_EXAMPLE_SERVER' in examples or 'LLAMA_EXAMPLE_COMMON' in examples) \
                and 'LLAMA_EXAMPLE_SERVER' not in excludes:
            options.append((line, args, neg, kind, env, removed))

    seen = {}
    for line, args, neg, *_ in options:
        for a in args + neg:
            if a in seen:
                raise SystemExit(f'arg.cpp:{line}: {a} already defined at arg.cpp:{seen[a]}')
            seen[a] = line

    out = sys.stdout
    out.write('// @generated by scripts/gen_server_flags.py from common/arg.cpp of llama.cpp build 11434.\n')
    out.write('// Do not edit by hand: rerun the script.\n\n')
    out.write('use super::flags::{FlagDef, Handler};\n\n')
    out.write(f'/// Every option llama-server registers ({len(options)} options, {len(seen)} spellings).\n')
    out.write('#[rustfmt::skip]\n')
    out.write('pub(crate) const FLAGS: &[FlagDef] = &[\n')
    for line, args, neg, kind, env, removed in options:
        a = ', '.join(f'"{x}"' for x in args)
        n = ', '.join(f'"{x}"' for x in neg)
        e = f'Some("{env}")' if env else 'None'
        r = f'Some("{removed}")' if removed else 'None'
        out.write(f'    FlagDef {{ line: {line}, args: &[{a}], neg: &[{n}], handler: Handler::{kind}, env: {e}, removed: {r} }},\n')
    out.write('];\n')


if __name__ == '__main__':
    main()
