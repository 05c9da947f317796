# gen-csv.awk: the bench/batch input, N rows of air quality readings.
#
#   awk -v n=1000000 -v seed=42 -f gen-csv.awk > air.csv
#
# Header id,station,ts,pm10,pm25,note, then rows with
#   id       1..n
#   station  station-<id % 500>
#   ts       an hour of 2026: every 500 ids move one hour on from 2026-01-01 00:00
#            (so (station, ts) is unique too), "YYYY-MM-DD HH:00"; wraps after a year
#   pm10     an integer, 0..199
#   pm25     a decimal with one digit after the point, 0.0..119.9
#   note     40 characters: letters, digits and spaces; one note in ten has a comma
#            in it, and is then quoted
# The same seed gives the same file.
BEGIN {
  if (n == "") n = 1000000
  if (seed == "") seed = 42
  srand(seed)
  split("31 28 31 30 31 30 31 31 30 31 30 31", mdays, " ")
  chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789      "
  nc = length(chars)
  pool = ""
  for (i = 0; i < 8192; i++) pool = pool substr(chars, int(rand() * nc) + 1, 1)
  span = length(pool) - 40
  # ts of each hour of the year, computed once
  h = 0
  for (m = 1; m <= 12; m++)
    for (d = 1; d <= mdays[m]; d++)
      for (hh = 0; hh < 24; hh++)
        tsof[h++] = sprintf("2026-%02d-%02d %02d:00", m, d, hh)
  hours = h
  print "id,station,ts,pm10,pm25,note"
  for (i = 1; i <= n; i++) {
    note = substr(pool, int(rand() * span) + 1, 40)
    if (rand() < 0.1) note = "\"" substr(note, 1, 19) "," substr(note, 21) "\""
    printf "%d,station-%d,%s,%d,%.1f,%s\n", i, i % 500, tsof[int((i - 1) / 500) % hours], int(rand() * 200), rand() * 120, note
  }
}
