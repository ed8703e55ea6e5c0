#!/usr/bin/env bash
# Checks that the peak kernels of bench/peak.cpp keep every accumulator in a register: no
# instruction inside a chains_* loop (a backward branch and what it jumps over) touches the
# stack. A spilled chain adds a load and a store per FMA and understates the peak.
# Usage: bench/check_peak_asm.sh OBJECT [OBJDUMP]   (x86-64 or aarch64 objects)
set -euo pipefail
obj=$1
objdump=${2:-objdump}
"$objdump" -d --no-show-raw-insn -C "$obj" | awk '
    function hex(s,   i, v) {  # mawk has no strtonum
        v = 0
        for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
        return v
    }
    function check(   i, j, t, n, stack, fma) {
        if (name == "") return
        for (i = 1; i <= count; i++) {
            if (target[i] == "" || target[i] > addr[i]) continue
            n = 0; stack = 0; fma = 0
            for (j = 1; j <= i; j++) {
                if (addr[j] < target[i]) continue
                n++
                if (text[j] ~ /\(%rsp\)|\(%rbp\)|\[sp|\[x29/) stack++
                if (text[j] ~ /vfmadd|mulps|mulss|fmla|fmadd/) fma++
            }
            if (fma == 0) continue  # not the multiply-add loop
            printf "%-14s loop of %3d instructions, %2d multiplies, %d stack accesses: %s\n",
                   name, n, fma, stack, stack ? "FAIL (spills)" : "ok"
            loops++
            if (stack) bad++
        }
    }
    /^[0-9a-f]+ <.*>:$/ {
        check(); count = 0; name = ""
        if (match($0, /chains_[a-z0-9]+/)) name = substr($0, RSTART, RLENGTH)
        next
    }
    name != "" && /^ *[0-9a-f]+:/ {
        count++
        split($0, parts, ":")
        gsub(/ /, "", parts[1])
        addr[count] = hex(parts[1])
        text[count] = $0
        target[count] = ""
        rest = substr($0, index($0, ":") + 1)
        sub(/^[ \t]+/, "", rest)
        op = rest
        sub(/[ \t].*/, "", op)
        # A branch (x86 j*, aarch64 b, b.cond, cb(n)z, tb(n)z) and its target address.
        if (op ~ /^(j[a-z]+|b|b\.[a-z]+|cbn?z|tbn?z)$/ && match(rest, /[0-9a-f]+ </)) {
            t = substr(rest, RSTART, RLENGTH - 2)
            target[count] = hex(t)
        }
    }
    END {
        check()
        if (loops == 0) { print "FAIL: no chains_* multiply-add loop found"; exit 1 }
        exit bad ? 1 : 0
    }'
