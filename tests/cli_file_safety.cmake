# What the tools do with the paths they are given: nothing the user has is lost, and nothing
# hangs. An output that is an input (classify --out = --checkpoint or --images, --log-json = the
# resumed checkpoint or a data file or one of OUT's own files), a FIFO or a device node is
# refused naming it; a FIFO as an input is refused at once; a user's metrics.csv in --out moves
# aside; a directory in the checkpoint's place is refused before the first epoch; partial temp
# files of dead runs are removed; a closed --log-json - pipe costs the JSON lines, not the run;
# a train_32x32.mat that is a directory is named in the data error.
file(REMOVE_RECURSE ${OUT})
file(MAKE_DIRECTORY ${OUT})
set(SMALL --hidden 8 --latent 2 --threads 1)

# run(expect_rc args...): runs the command (60 s at most: a hang fails), sets out/err.
function(run expect_rc)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE o ERROR_VARIABLE e
                  TIMEOUT 60)
  if(NOT "${rc}" STREQUAL "${expect_rc}")
    message(FATAL_ERROR "${ARGN}: exit status '${rc}', want ${expect_rc}: ${o}${e}")
  endif()
  set(out "${o}" PARENT_SCOPE)
  set(err "${e}" PARENT_SCOPE)
endfunction()

include(${CMAKE_CURRENT_LIST_DIR}/cli_expect.cmake)

function(expect_same_file path hash what)
  file(SHA256 ${path} now)
  if(NOT now STREQUAL hash)
    message(FATAL_ERROR "${what}: ${path} was changed")
  endif()
endfunction()

function(mkfifo path)
  execute_process(COMMAND mkfifo ${path} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "mkfifo ${path} failed")
  endif()
endfunction()

function(expect_fifo path what)
  execute_process(COMMAND test -p ${path} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what}: ${path} is no longer a FIFO")
  endif()
endfunction()

# The inputs: copies of the bundled digits (never the repository's own files), a checkpoint.
file(COPY ${DATA}/mnist10k-images-idx3-ubyte.gz ${DATA}/mnist10k-labels-idx1-ubyte.gz
     DESTINATION ${OUT}/data)
set(IMAGES ${OUT}/data/mnist10k-images-idx3-ubyte.gz)
set(LABELS ${OUT}/data/mnist10k-labels-idx1-ubyte.gz)
set(FILES --train-images ${IMAGES} --train-labels ${LABELS} --test-images ${IMAGES}
          --test-labels ${LABELS} --validation 0)
run(0 ${TRAIN} --epochs 1 ${SMALL} --quiet --out ${OUT}/run)
set(CKPT ${OUT}/run/checkpoint.safetensors)
file(SHA256 ${CKPT} ckpt_hash)
file(SHA256 ${IMAGES} images_hash)
file(SHA256 ${LABELS} labels_hash)

# ---- classify: --out is one of its inputs, a FIFO, a link to a device node.
run(1 ${CLASSIFY} --checkpoint ${CKPT} --threads 1 --out ${CKPT})
expect_match("${err}" "classify: error: --out: [^\n]*checkpoint.safetensors is the same file as --checkpoint [^\n]*checkpoint.safetensors: writing it would destroy that input" "--out = --checkpoint")
run(1 ${CLASSIFY} --checkpoint ${CKPT} --threads 1 --images ${IMAGES} --out ${IMAGES})
expect_match("${err}" "--out: [^\n]* is the same file as --images " "--out = --images")
file(MAKE_DIRECTORY ${OUT}/mnist)
file(COPY_FILE ${LABELS} ${OUT}/mnist/train-labels-idx1-ubyte.gz)
run(1 ${CLASSIFY} --checkpoint ${CKPT} --threads 1 --data ${OUT}/mnist
    --out ${OUT}/mnist/train-labels-idx1-ubyte.gz)
expect_match("${err}" "--out: [^\n]* is the same file as --data [^\n]*mnist/train-labels-idx1-ubyte.gz" "--out = a --data file")
mkfifo(${OUT}/fifo)
run(1 ${CLASSIFY} --checkpoint ${CKPT} --threads 1 --out ${OUT}/fifo)
expect_match("${err}" "--out: [^\n]*fifo: is a FIFO \\(named pipe\\), not a regular file" "--out FIFO")
expect_fifo(${OUT}/fifo "classify --out FIFO")
file(CREATE_LINK /dev/null ${OUT}/null SYMBOLIC)
run(1 ${CLASSIFY} --checkpoint ${CKPT} --threads 1 --out ${OUT}/null)
expect_match("${err}" "--out: [^\n]*null: is a symbolic link to /dev/null, which is a character device" "--out device")
if(NOT IS_SYMLINK ${OUT}/null)
  message(FATAL_ERROR "classify --out replaced the link to /dev/null")
endif()

# ---- a FIFO as an input: refused at once, not waited on.
run(1 ${CLASSIFY} --checkpoint ${OUT}/fifo --threads 1 --out ${OUT}/p.csv)
expect_match("${err}" "fifo: cannot open: is a FIFO \\(named pipe\\), not a regular file" "--checkpoint FIFO")
run(1 ${CLASSIFY} --checkpoint ${CKPT} --threads 1 --images ${OUT}/fifo --out ${OUT}/p.csv)
expect_match("${err}" "fifo: cannot open: is a FIFO" "--images FIFO")
run(1 ${TRAIN} --epochs 1 ${SMALL} --out ${OUT}/t --train-images ${OUT}/fifo --train-labels ${LABELS}
    --test-images ${IMAGES} --test-labels ${LABELS})
expect_match("${err}" "fifo: cannot open: is a FIFO" "--train-images FIFO")

# ---- embed: a FIFO where one of its files goes is refused before any work.
file(MAKE_DIRECTORY ${OUT}/embed)
mkfifo(${OUT}/embed/v.npy)
run(1 ${EMBED} --checkpoint ${CKPT} --threads 1 --out ${OUT}/embed)
expect_match("${err}" "embed: error: --out: [^\n]*v.npy: is a FIFO" "embed into a FIFO")
expect_fifo(${OUT}/embed/v.npy "embed")

# ---- train_mnist --log-json: an input or one of the run's own files is refused before training.
run(1 ${TRAIN} --epochs 2 ${SMALL} --out ${OUT}/lj --resume ${CKPT} --log-json ${CKPT})
expect_match("${err}" "--log-json: [^\n]* is the same file as --resume " "--log-json = --resume")
run(1 ${TRAIN} --epochs 1 ${SMALL} --out ${OUT}/lj ${FILES} --log-json ${LABELS})
expect_match("${err}" "--log-json: [^\n]* is the same file as --train-labels " "--log-json = data")
foreach(name metrics.csv checkpoint.safetensors)
  run(1 ${TRAIN} --epochs 1 ${SMALL} --out ${OUT}/run --log-json ${OUT}/run/${name})
  expect_match("${err}" "--log-json: [^\n]* is the run's own ${name} in --out " "--log-json OUT/${name}")
endforeach()
# OUT/metrics.jsonl is where the JSON lines go without the flag: naming it is the same.
run(0 ${TRAIN} --epochs 1 ${SMALL} --out ${OUT}/jsonl --log-json ${OUT}/jsonl/metrics.jsonl)
file(STRINGS ${OUT}/jsonl/metrics.jsonl jsonl_lines)
expect_match("${jsonl_lines}" "\"epoch\": ?1" "--log-json OUT/metrics.jsonl")
if(EXISTS ${OUT}/lj/metrics.csv OR EXISTS ${OUT}/run/previous)
  message(FATAL_ERROR "a refused --log-json run wrote or moved files")
endif()
expect_same_file(${CKPT} ${ckpt_hash} "the refused runs")
expect_same_file(${IMAGES} ${images_hash} "the refused runs")
expect_same_file(${LABELS} ${labels_hash} "the refused runs")

# ---- the user's own metrics.csv in --out moves aside; it is never overwritten.
file(MAKE_DIRECTORY ${OUT}/mixed)
file(WRITE ${OUT}/mixed/metrics.csv "my,own\n")
run(0 ${TRAIN} --epochs 1 ${SMALL} --out ${OUT}/mixed)
file(READ ${OUT}/mixed/previous/metrics.csv kept)
if(NOT kept STREQUAL "my,own\n")
  message(FATAL_ERROR "the user's metrics.csv was not kept in previous/: '${kept}'")
endif()
expect_match("${err}" "note: [^\n]*mixed held metrics.csv but no checkpoint [^\n]*: moved to [^\n]*mixed/previous/" "the moved note")

# ---- a directory in the checkpoint's place: refused before the first epoch.
file(MAKE_DIRECTORY ${OUT}/ckdir/checkpoint.safetensors)
run(1 ${TRAIN} --epochs 1 ${SMALL} --out ${OUT}/ckdir)
expect_match("${err}" "ckdir/checkpoint.safetensors: is a directory, not a regular file" "checkpoint directory")
if(err MATCHES "epoch +1/1" OR EXISTS ${OUT}/ckdir/metrics.csv)
  message(FATAL_ERROR "the run trained before refusing the checkpoint's directory: ${err}")
endif()

# ---- partial checkpoints of runs that no longer run are removed, with a note; a live
# process's (pid 1) is left alone.
file(MAKE_DIRECTORY ${OUT}/stale)
file(WRITE ${OUT}/stale/checkpoint.safetensors.tmp.999999999 "partial")
file(WRITE ${OUT}/stale/checkpoint.safetensors.tmp.1 "being written")
run(0 ${TRAIN} --epochs 1 ${SMALL} --out ${OUT}/stale)
expect_match("${err}" "note: removed [^\n]*stale/checkpoint.safetensors.tmp.999999999: partial file left by a run stopped mid-write" "stale temp note")
if(EXISTS ${OUT}/stale/checkpoint.safetensors.tmp.999999999 OR NOT EXISTS ${OUT}/stale/checkpoint.safetensors.tmp.1)
  message(FATAL_ERROR "the stale temp file is still there, or the live one is gone")
endif()

# ---- --log-json - into a pipe whose reader goes away: training goes on, with one note.
execute_process(COMMAND ${TRAIN} --epochs 6 ${SMALL} --out ${OUT}/pipe --log-json -
                COMMAND head -n 1
                RESULTS_VARIABLE rcs OUTPUT_VARIABLE o ERROR_VARIABLE e TIMEOUT 60)
if(NOT rcs STREQUAL "0;0")
  message(FATAL_ERROR "train_mnist | head -n 1: exit statuses ${rcs}: ${e}")
endif()
expect_match("${e}" "note: cannot write the JSON lines to stdout: its reader went away; training goes on without them; the epochs are still logged in [^\n]*pipe/metrics.csv" "closed pipe")
expect_match("${e}" "epoch +6/6" "closed pipe: all epochs")
file(STRINGS ${OUT}/pipe/metrics.csv rows)
list(LENGTH rows n)
if(NOT n EQUAL 7)
  message(FATAL_ERROR "closed pipe: metrics.csv holds ${n} lines, want 7")
endif()

# ---- --data with a train_32x32.mat that is a directory: the error says why it is not SVHN.
file(MAKE_DIRECTORY ${OUT}/notsvhn/train_32x32.mat)
run(1 ${TRAIN} --epochs 1 ${SMALL} --out ${OUT}/ns --data ${OUT}/notsvhn)
expect_match("${err}" "missing train-images-idx3-ubyte [^\n]*; train_32x32.mat is there but is a directory, not a regular file, so it was not read as SVHN's" "SVHN directory")
