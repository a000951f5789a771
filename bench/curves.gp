# The curves of build/bench (bench/README.md, "Curves") as one SVG chart:
# four panels, libdesync beside its baseline at each size. Called by
# bench/chart.sh:  gnuplot -e "dir='build/bench-csv'; out='...svg'" bench/curves.gp
set terminal svg size 1000,760 dynamic enhanced font 'sans,12' background rgb 'white'
set output out
set datafile separator ','
set key top left box opaque
set grid
set style data linespoints
set multiplot layout 2,2 title "libdesync curves (bench/README.md): medians, one run of build/bench"
lib = 'lc rgb "#1f77b4" lw 2 pt 7 ps 0.8'
base = 'lc rgb "#d62728" lw 2 pt 5 ps 0.8 dt 2'

set title 'C3: W3, threads syncing one object'
set xlabel 'threads'
set ylabel 'ns per op'
set logscale x 2
set logscale y
plot dir.'/c3_threads.csv' every ::1 using 1:2 title 'libdesync' @lib, \
     ''                   every ::1 using 1:3 title 'pthread mutex' @base

set title 'C6: W6, objects created, used, released'
set xlabel 'objects'
set ylabel 'ns per object'
set logscale x 10
set format x '10^{%T}'
plot dir.'/c6_objects.csv' every ::1 using 1:2 title 'libdesync' @lib, \
     ''                   every ::1 using 1:3 title 'mutex + u64 object' @base
set format x '%g'

set title 'C2: W2, producers desyncing onto one object'
set xlabel 'producer threads'
set ylabel 'ns per job'
set logscale x 2
plot dir.'/c2_producers.csv' every ::1 using 1:2 title 'libdesync' @lib, \
     ''                     every ::1 using 1:3 title 'mutex+condvar queue' @base

set title 'CM: 8 threads, 1,000 objects, random desync/sync'
unset logscale
set logscale y
set xlabel ''
set ylabel 'ns per op (lower is better)'
set style fill solid 0.7
set boxwidth 0.6
set xrange [-0.7:1.7]
set yrange [1:*]
set xtics ('libdesync' 0, 'mutex per object' 1)
unset key
plot dir.'/cm_many.csv' every ::1 using (0):2 with boxes lc rgb '#1f77b4', \
     ''                 every ::1 using (1):3 with boxes lc rgb '#d62728', \
     ''                 every ::1 using (0):2:(sprintf('%.0f', $2)) with labels offset 0,1 notitle, \
     ''                 every ::1 using (1):3:(sprintf('%.0f', $3)) with labels offset 0,1 notitle
unset multiplot
