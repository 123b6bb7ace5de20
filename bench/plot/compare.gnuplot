# Charts for the compare section of docs/BENCHMARKS.md, drawn by
# bench/plot/compare_report.py (gnuplot -e "dir='...'; outdir='...'" this).
#   dir/throughput.dat: label  msgs_per_s  color   (one bar per system and scenario)
#   dir/latency.dat:    label  p50_ms  p99_ms  p999_ms
set terminal pngcairo size 1200,640 font "sans,10"
set datafile separator "\t"
set style fill solid 0.85 border -1
set grid ytics lc rgb "#dddddd"
set xtics rotate by -35 left nomirror
set bmargin 11
set rmargin 22
set key top right

set output outdir."/compare-throughput.png"
set title "Messages per second acknowledged (same run, same size and window; higher is better)"
set ylabel "msgs/s (log scale)"
set logscale y
set boxwidth 0.7
set yrange [1000:*]
plot dir."/throughput.dat" using 0:2:3:xtic(1) with boxes lc variable notitle, \
     "" using 0:($2*1.15):(sprintf("%.0fk", $2/1000)) with labels font "sans,8" notitle

set output outdir."/compare-latency.png"
set title "Acknowledgement latency percentiles (lower is better)"
set ylabel "ms (log scale)"
set yrange [*:*]
set style data histograms
set style histogram clustered gap 1
set boxwidth 0.9 relative
plot dir."/latency.dat" using 2:xtic(1) title "p50" lc rgb "#4c9be8", \
     "" using 3 title "p99" lc rgb "#f0a030", \
     "" using 4 title "p99.9" lc rgb "#d04040"
