# reproduce end to end, one quick row each: Table 2 on the bundled MNIST digits (dense
# EquiVAE), and Tables 1 and 2 on SVHN-format files of made-up coloured blobs (convolutional
# EquiVAE, Gaussian likelihood, the benchmark classifier on f_inv's conv trunk). Each writes
# runs.csv with a finite error for every classifier of its table, and table.md beside the
# paper's figures for that data set. Then: an earlier reproduction in --out is moved aside, not
# overwritten, unless --reuse continues it; Tables 1 and 2 have default directories of their
# own; an empty runs.csv is reused as holding no run; an --out that cannot be made is one line.
file(REMOVE_RECURSE ${OUT})
file(MAKE_DIRECTORY ${OUT}/svhn)
execute_process(COMMAND ${MAKE} ${OUT}/svhn 600 200 RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "make_svhn_files failed (${rc}): ${err}")
endif()

# run(NAME EXPECT_TABLE EXPECT_PAPER COLUMNS ARGS...): COLUMNS are the runs.csv columns (0-based)
# that must hold finite errors.
function(run name table paper columns)
  execute_process(COMMAND ${REPRODUCE} --quick --quiet --seeds 1 --hidden 32 --latent 4
                  --threads 1 --device cpu --out ${OUT}/${name} ${ARGN}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "reproduce ${name} failed (${rc}): ${err}")
  endif()
  if(NOT out MATCHES "${paper}")
    message(FATAL_ERROR "reproduce ${name}: the table lacks '${paper}': ${out}")
  endif()
  file(STRINGS ${OUT}/${name}/runs.csv rows)
  list(LENGTH rows n)
  if(NOT n EQUAL 2)
    message(FATAL_ERROR "reproduce ${name}: runs.csv should hold one run: ${rows}")
  endif()
  list(GET rows 1 row)
  string(REPLACE "," ";" row "${row}")
  list(GET row 0 t)
  if(NOT t EQUAL ${table})
    message(FATAL_ERROR "reproduce ${name}: table ${t}, expected ${table}")
  endif()
  foreach(c ${columns})
    list(GET row ${c} e)
    if(NOT e MATCHES "^[0-9.e-]+$" OR e GREATER 1)
      message(FATAL_ERROR "reproduce ${name}: column ${c} of runs.csv is not an error: ${e}")
    endif()
  endforeach()
  if(NOT EXISTS ${OUT}/${name}/table.md)
    message(FATAL_ERROR "reproduce ${name} wrote no table.md")
  endif()
  message(STATUS "reproduce ${name}: ${row}")
endfunction()

# Lists that would merge rows or wrap around are refused before anything trains.
function(refused regex)
  execute_process(COMMAND ${REPRODUCE} --quiet --threads 1 --device cpu --out ${OUT}/refused
                  ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc EQUAL 0 OR NOT err MATCHES "${regex}")
    message(FATAL_ERROR "reproduce ${ARGN}: expected a refusal /${regex}/, got ${rc}: ${err}")
  endif()
endfunction()
refused("--labels: lists 100 twice" --labels 100,100)
refused("--epochs: expects a comma-separated list of integers in \\[1, 100000\\]"
        --epochs 4294967297)
refused("--labels: sets Table 2's labelled-set sizes" --supervised --labels 100)

# columns: 4 q(y|x), 5 distance, 6 neural, 7 benchmark
run(mnist2 2 "paper EquiVAE \\(MNIST\\).*\\| 8.90 ± 0.70 \\| 21.91 ± 0.66 \\|" "4;5;6;7")
# --reuse takes a row only from a run of the same settings: the same flags take it as it is
# (its seconds too), another width trains again and says why.
function(reuse name expect_same)
  execute_process(COMMAND ${REPRODUCE} --quick --quiet --seeds 1 --latent 4 --threads 1
                  --device cpu --out ${OUT}/${name} --reuse ${OUT}/mnist2/runs.csv ${ARGN}
                  RESULT_VARIABLE rc ERROR_VARIABLE err)
  file(STRINGS ${OUT}/mnist2/runs.csv before)
  file(STRINGS ${OUT}/${name}/runs.csv after)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "reproduce ${name} failed (${rc}): ${err}")
  elseif(expect_same AND NOT "${after}" STREQUAL "${before}")
    message(FATAL_ERROR "reproduce ${name} did not reuse the earlier run: ${after}")
  elseif(NOT expect_same AND ("${after}" STREQUAL "${before}" OR NOT err MATCHES "other settings"))
    message(FATAL_ERROR "reproduce ${name} reused a run of other settings: ${after} ${err}")
  endif()
endfunction()
reuse(reused TRUE --hidden 32)
reuse(retrained FALSE --hidden 16)
# A damaged runs.csv is refused, naming the file, the line and the column, before anything
# trains: values out of range (an error rate is a fraction in [0, 1]), extra columns, and two
# rows of one run that disagree.
file(STRINGS ${OUT}/mnist2/runs.csv good)
list(GET good 0 header)
list(GET good 1 row)
string(REPLACE "," ";" fields "${row}")
function(damaged name regex)
  string(REPLACE ";" "\n" text "${header};${ARGN}")
  file(WRITE ${OUT}/${name}.csv "${text}\n")
  execute_process(COMMAND ${REPRODUCE} --quick --quiet --seeds 1 --hidden 32 --latent 4
                  --threads 1 --device cpu --out ${OUT}/damaged --reuse ${OUT}/${name}.csv
                  RESULT_VARIABLE rc ERROR_VARIABLE err)
  if(NOT rc EQUAL 1 OR NOT err MATCHES "${name}.csv:${regex}")
    message(FATAL_ERROR "reproduce --reuse ${name}.csv: expected /${regex}/, got ${rc}: ${err}")
  endif()
endfunction()
function(with_field index value out)  # the good row with field `index` set to `value`
  set(f ${fields})
  list(REMOVE_AT f ${index})
  list(INSERT f ${index} "${value}")
  string(REPLACE ";" "," r "${f}")
  set(${out} "${r}" PARENT_SCOPE)
endfunction()
with_field(5 -5 negative)
damaged(negative "2, column 6 \\(distance_error\\): '-5' is not an error rate \\(a fraction in \\[0, 1\\]\\)"
        "${negative}")
with_field(6 1e300 huge)
damaged(huge "2, column 7 \\(neural_error\\): '1e300' is not an error rate" "${huge}")
with_field(4 nan no_q)
damaged(no_q "2, column 5 \\(q_error\\): 'nan' is not an error rate" "${no_q}")
with_field(3 0 no_epochs)
damaged(no_epochs "2, column 4 \\(epochs\\): '0' is not an integer in \\[1, 100000\\]" "${no_epochs}")
damaged(extra "2: has 11 columns where the header has 10" "${row},7")
with_field(5 0.5 other)
damaged(conflict "3: holds other errors than [^\n]*conflict.csv:2 for the same run" "${row}" "${other}")
run(svhn2 2 "paper EquiVAE \\(SVHN\\)" "4;5;6;7" --data ${OUT}/svhn --validation 100
    --labels 100 --k 8 --conv-width 4)
# Supervised SVHN, with the epochs to learn the blobs: the distance classifier on f_inv and the
# benchmark classifier on its conv trunk must both beat chance (90%) by far.
# Table 1 names its epochs as Table 2 does, and the caption its splits' sizes.
run(svhn1 1 "Training: 500 examples.*validation: 100 examples.*paper \\(full SVHN\\).*\\| supervised, 500 labels \\| 1 \\| 2 \\| .*12.30 ± 0.28 / 11.97 ± 0.34 / 10.04 ± 0.14" "5;6;7"
    --supervised --data ${OUT}/svhn --validation 100 --k 8 --conv-width 4 --epochs 2
    --classifier-epochs 20)
file(STRINGS ${OUT}/svhn1/runs.csv rows)
list(GET rows 1 row)
string(REPLACE "," ";" row "${row}")
list(GET row 5 distance)
list(GET row 7 benchmark)
if(distance GREATER 0.5 OR benchmark GREATER 0.5)
  message(FATAL_ERROR "supervised SVHN blobs not learnt: distance ${distance}, benchmark ${benchmark}")
endif()

# ---- Earlier reproductions are kept, interrupted ones continue, --out errors say why.
set(SMALL --quick --quiet --hidden 32 --latent 4 --threads 1 --device cpu)
# quick(DIR ARGS...): a quick reproduction into DIR ("" : the default --out, run in
# ${OUT}/defaults) that must succeed; its stderr in `err`.
function(quick dir)
  set(out_flag)
  if(dir)
    set(out_flag --out ${dir})
  endif()
  file(MAKE_DIRECTORY ${OUT}/defaults)
  execute_process(COMMAND ${REPRODUCE} ${SMALL} ${out_flag} ${ARGN}
                  WORKING_DIRECTORY ${OUT}/defaults
                  RESULT_VARIABLE rc OUTPUT_QUIET ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "reproduce ${out_flag} ${ARGN} failed (${rc}): ${err}")
  endif()
  set(err "${err}" PARENT_SCOPE)
endfunction()
# expect_rows(CSV N TABLE): CSV holds N runs, each of TABLE.
function(expect_rows csv n table)
  if(NOT EXISTS ${csv})
    message(FATAL_ERROR "${csv} is missing")
  endif()
  file(STRINGS ${csv} rows)
  list(POP_FRONT rows header)
  list(LENGTH rows got)
  if(NOT got EQUAL n)
    message(FATAL_ERROR "${csv} holds ${got} runs, expected ${n}: ${rows}")
  endif()
  foreach(row ${rows})
    if(NOT row MATCHES "^${table},")
      message(FATAL_ERROR "${csv}: a run of another table than ${table}: ${row}")
    endif()
  endforeach()
endfunction()

# A reproduction without --reuse naming OUT/runs.csv moves the earlier one aside, to the first
# free OUT/previous, OUT/previous-2, ..., and says so; Table 1 after Table 2 likewise.
quick(${OUT}/keep --seeds 2)
quick(${OUT}/keep)
if(NOT err MATCHES "note: [^\n]*/keep held an earlier reproduction [^\n]*: moved its runs.csv, table.md, runs/ to [^\n]*/keep/previous/; --reuse [^\n]*/keep/previous/runs.csv takes its runs")
  message(FATAL_ERROR "reproduce over an earlier reproduction: no note: ${err}")
endif()
expect_rows(${OUT}/keep/previous/runs.csv 2 2)
expect_rows(${OUT}/keep/runs.csv 1 2)
quick(${OUT}/keep --supervised)
expect_rows(${OUT}/keep/previous-2/runs.csv 1 2)
expect_rows(${OUT}/keep/runs.csv 1 1)
if(NOT EXISTS ${OUT}/keep/previous/runs/table2-labels100-seed2/metrics.csv)
  message(FATAL_ERROR "the earlier reproduction's runs/ was not moved with its runs.csv")
endif()
# A reproduction refused on its flags (a labelled set larger than a class allows) moves nothing.
execute_process(COMMAND ${REPRODUCE} ${SMALL} --out ${OUT}/keep --labels 6990
                RESULT_VARIABLE rc OUTPUT_QUIET ERROR_VARIABLE err)
if(NOT rc EQUAL 1 OR NOT err MATCHES "fewer than the 699 labelled ones asked for"
   OR EXISTS ${OUT}/keep/previous-3)
  message(FATAL_ERROR "reproduce --labels 6990: expected a refusal that moves nothing, got "
                      "(${rc}): ${err}")
endif()
expect_rows(${OUT}/keep/runs.csv 1 1)
# --reuse OUT/runs.csv continues it in place: its rows are kept, nothing is moved.
quick(${OUT}/continued --seeds 2)
file(STRINGS ${OUT}/continued/runs.csv first)
quick(${OUT}/continued --seeds 3 --reuse ${OUT}/continued/runs.csv)
expect_rows(${OUT}/continued/runs.csv 3 2)
file(STRINGS ${OUT}/continued/runs.csv after)
list(SUBLIST after 0 3 kept)
if(NOT "${kept}" STREQUAL "${first}" OR EXISTS ${OUT}/continued/previous)
  message(FATAL_ERROR "--reuse OUT/runs.csv did not continue in place: ${after}")
endif()

# Table 1 and Table 2 have default output directories of their own, and a smoke run's stay
# apart from them.
quick("" --supervised)
quick("")
expect_rows(${OUT}/defaults/runs/reproduce/quick-table1/runs.csv 1 1)
expect_rows(${OUT}/defaults/runs/reproduce/quick-table2/runs.csv 1 2)
if(EXISTS ${OUT}/defaults/runs/reproduce/table1 OR EXISTS ${OUT}/defaults/runs/reproduce/table2)
  message(FATAL_ERROR "a --quick run wrote into a table's default directory")
endif()

# An empty runs.csv (an earlier build's, killed in its first run) holds no run.
file(WRITE ${OUT}/empty.csv "")
quick(${OUT}/from-empty --reuse ${OUT}/empty.csv)
expect_rows(${OUT}/from-empty/runs.csv 1 2)

# An output directory that cannot be made is one line naming --out and the reason.
function(out_refused dir regex)
  execute_process(COMMAND ${REPRODUCE} ${SMALL} --out ${dir} RESULT_VARIABLE rc OUTPUT_QUIET
                  ERROR_VARIABLE err)
  if(NOT rc EQUAL 1 OR NOT err MATCHES "^reproduce: error: --out: ${regex}[^\n]*\n$")
    message(FATAL_ERROR "reproduce --out ${dir}: expected one line /${regex}/, got ${rc}: ${err}")
  endif()
endfunction()
out_refused(/proc/x "/proc/x: cannot create the output directory: ")
out_refused(${OUT}/empty.csv "[^\n]*/empty.csv: is a file, not a directory")
