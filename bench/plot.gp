# plot.gp - bench/run's plots, drawn from the .dat files report.py writes into dir.
#   gnuplot -e "dir='bench/results/DATE'; title_suffix='...'" bench/plot.gp
# Each plot is written twice: PNG (pngcairo) and SVG.
if (!exists("dir")) dir = "."
if (!exists("title_suffix")) title_suffix = ""

set termoption noenhanced
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key top left
set xtics rotate by -30 noenhanced
set logscale y

do for [fmt in "png svg"] {
    if (fmt eq "png") { set terminal pngcairo noenhanced size 1100,600 font ",10" } else { set terminal svg noenhanced size 1100,600 dynamic font ",10" }

    set output dir."/latency.".fmt
    set title "One-way latency, 64 B (RTT/2, median of runs) - ".title_suffix noenhanced
    set ylabel "ns (log)"
    plot dir."/latency.dat" using 2:xtic(1) title "p50", "" using 3 title "p99", "" using 4 title "p99.9"

    set output dir."/throughput.".fmt
    set title "Throughput, 64 B (rings: 8 B index), msgs/s, median of runs - ".title_suffix noenhanced
    set ylabel "messages/s (log)"
    plot dir."/throughput.dat" using 2:xtic(1) title "1P/1C pinned", "" using 3 title "1P/1C unpinned", "" using 4 title "2P/2C", "" using 5 title "4P/4C"

    set output dir."/throughput-1k.".fmt
    set title "Throughput, 1 KiB, msgs/s, median of runs - ".title_suffix noenhanced
    plot dir."/throughput-1k.dat" using 2:xtic(1) title "1P/1C pinned", "" using 3 title "1P/1C unpinned", "" using 4 title "2P/2C", "" using 5 title "4P/4C"
}

set style data linespoints
unset xtics
set xtics ("1/1" 1, "2/2" 2, "4/4" 4) norotate
set xrange [0.8:4.2]
set key outside right
do for [fmt in "png svg"] {
    if (fmt eq "png") { set terminal pngcairo noenhanced size 1000,550 font ",10" } else { set terminal svg noenhanced size 1000,550 dynamic font ",10" }
    set output dir."/oversub.".fmt
    set title "Oversubscription: producers/consumers per side on 2 cpus, 64 B - ".title_suffix noenhanced
    set xlabel "processes per side (all unpinned)"
    set ylabel "messages/s (log)"
    plot for [c=2:8] dir."/oversub.dat" using 1:c with linespoints lw 2 pt 7 title columnhead(c)
}

# Latency by percentile (the last run of each case): x = 1 / (1 - p), log-log.
if (exists("have_pct") && have_pct) {
    reset
    set termoption noenhanced
    set logscale xy
    set grid
    set key top left
    set xtics ("0%%" 1, "50%%" 2, "90%%" 10, "99%%" 100, "99.9%%" 1000, "99.99%%" 10000, "99.999%%" 100000)
    set xlabel "percentile"
    set ylabel "one-way ns (log)"
    do for [fmt in "png svg"] {
        if (fmt eq "png") { set terminal pngcairo noenhanced size 1000,600 font ",10" } else { set terminal svg noenhanced size 1000,600 dynamic font ",10" }
        set output dir."/latency-percentiles.".fmt
        set title "One-way latency by percentile, 64 B, busy-poll (last run of each case) - ".title_suffix
        plot for [c=2:nseries+1] dir."/percentiles.dat" using 1:c with lines lw 2 title columnhead(c)
    }
}
