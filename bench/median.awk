# median.awk — reads "RESULT key value unit" lines from several runs of a
# benchmark and prints one RESULT line per key, in first-seen order, with
# the median of its values (bench/store.sh, bench/postgres.sh).
$1 == "RESULT" { if (!($2 in n)) order[++keys] = $2; v[$2, ++n[$2]] = $3; unit[$2] = $4 }
END {
    for (k = 1; k <= keys; k++) {
        key = order[k]; m = n[key]
        for (i = 1; i <= m; i++) s[i] = v[key, i]
        for (i = 2; i <= m; i++) # insertion sort: a handful of values
            for (j = i; j > 1 && s[j - 1] > s[j]; j--) { t = s[j]; s[j] = s[j - 1]; s[j - 1] = t }
        med = m % 2 ? s[(m + 1) / 2] : (s[m / 2] + s[m / 2 + 1]) / 2
        printf "RESULT %s %s %s\n", key, med, unit[key]
    }
}
