# figures, embed and classify from the command line, on the checkpoint of a tiny run with
# 2-D latents. MODE picks the step:
#   train     the fixture: one epoch of train_mnist into RUN/run (its output in train.log)
#   figures   every PNG of Figs. 4 and 5, the right size and not blank
#   embed     the .npy files; read back with numpy when PYTHON (a python with numpy) is set
#   classify  the CSV with and without labels, and the error matching train_mnist's (also
#             q(y|x)'s for a semi-supervised checkpoint it trains itself)
#   errors    the tools' faults, each with its message; with PYTHON3, damaged checkpoints
#             (a NaN weight, an unknown format version, no Adam moments) and images of
#             another shape
#   trained_data  the data the checkpoint's run recorded: --validation auto holds out what it
#             held out, and a note when the data flags give other data
set(CKPT ${RUN}/run/checkpoint.safetensors)

function(run_tool expect_rc)  # run_tool(0|1 tool args...): sets out/err in the parent scope
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE o ERROR_VARIABLE e)
  if(expect_rc EQUAL 0 AND NOT rc EQUAL 0)
    message(FATAL_ERROR "${ARGN} failed (${rc}): ${e}")
  elseif(NOT expect_rc EQUAL 0 AND rc EQUAL 0)
    message(FATAL_ERROR "${ARGN} should have failed: ${o}")
  endif()
  set(out "${o}" PARENT_SCOPE)
  set(err "${e}" PARENT_SCOPE)
endfunction()

include(${CMAKE_CURRENT_LIST_DIR}/cli_expect.cmake)

# Damaged checkpoints and images (tests/make_damaged_inputs.py writes them), each refused by
# every tool that reads it, naming the file and the fault; Adam's moments are not needed.
function(damaged_inputs)
  set(damage ${PYTHON3} ${SOURCE}/tests/make_damaged_inputs.py)
  set(nan ${RUN}/nan.safetensors)
  execute_process(COMMAND ${damage} nan ${CKPT} ${nan} finv.0.bias 5 COMMAND_ERROR_IS_FATAL ANY)
  foreach(tool ${FIGURES} ${EMBED} ${CLASSIFY})
    get_filename_component(name ${tool} NAME)
    run_tool(1 ${tool} --checkpoint ${nan} --threads 1 --out ${RUN}/nan_${name})
    expect_match("${err}" "${name}: error: [^\n]*nan.safetensors: tensor finv.0.bias holds a non-finite value \\(element 5 of 32 = nan\\)"
                 "${name} on a NaN weight")
  endforeach()
  set(newer ${RUN}/newer.safetensors)
  execute_process(COMMAND ${damage} format ${CKPT} ${newer} equivae-checkpoint-99
                  COMMAND_ERROR_IS_FATAL ANY)
  run_tool(1 ${CLASSIFY} --checkpoint ${newer} --threads 1 --out ${RUN}/newer.csv)
  expect_match("${err}" "newer.safetensors: checkpoint format 'equivae-checkpoint-99' is not one this build reads \\(it reads equivae-checkpoint-1\\)"
               "an unknown format version")
  set(weights ${RUN}/weights_only.safetensors)
  execute_process(COMMAND ${damage} weights-only ${CKPT} ${weights} COMMAND_ERROR_IS_FATAL ANY)
  run_tool(0 ${CLASSIFY} --checkpoint ${weights} --threads 1 --out ${RUN}/weights_only.csv)
  run_tool(0 ${EMBED} --checkpoint ${weights} --threads 1 --out ${RUN}/weights_only_embed)
  # 784 pixels a digit as 56 x 14: the dense model was trained on 28 x 28.
  set(tall ${RUN}/tall-images-idx3-ubyte)
  execute_process(COMMAND ${damage} reshape ${SOURCE}/data/mnist10k-images-idx3-ubyte.gz ${tall}
                          56 14 COMMAND_ERROR_IS_FATAL ANY)
  run_tool(1 ${CLASSIFY} --checkpoint ${CKPT} --threads 1 --images ${tall} --out ${RUN}/tall.csv)
  expect_match("${err}" "tall-images-idx3-ubyte: images are 1x56x14, the model expects 1x28x28 images"
               "classify on 56 x 14 images")
  set(labels ${SOURCE}/data/mnist10k-labels-idx1-ubyte.gz)
  foreach(tool ${EMBED} ${FIGURES})
    get_filename_component(name ${tool} NAME)
    run_tool(1 ${tool} --checkpoint ${CKPT} --threads 1 --train-images ${tall} --train-labels
             ${labels} --test-images ${tall} --test-labels ${labels} --out ${RUN}/tall_${name})
    expect_match("${err}" "${name}: error: [^\n]*tall-images-idx3-ubyte[^\n]*: images are 1x56x14, the model expects 1x28x28 images"
                 "${name} on 56 x 14 images")
  endforeach()
endfunction()

if(MODE STREQUAL "train")
  file(REMOVE_RECURSE ${RUN})
  file(MAKE_DIRECTORY ${RUN}/run)
  execute_process(COMMAND ${TRAIN} --epochs 1 --hidden 32 --latent 2 --threads 1 --out ${RUN}/run
                  RESULT_VARIABLE rc OUTPUT_FILE ${RUN}/run/train.log ERROR_VARIABLE e)
  if(NOT rc EQUAL 0 OR NOT EXISTS ${RUN}/run/checkpoint.safetensors)
    message(FATAL_ERROR "train_mnist failed (${rc}): ${e}")
  endif()

elseif(MODE STREQUAL "figures")
  file(REMOVE_RECURSE ${RUN}/figures)
  run_tool(0 ${FIGURES} --checkpoint ${CKPT} --threads 1 --out ${RUN}/figures --grid 6)
  # 28-pixel tiles, 2-pixel gutters: a side of n tiles is 30 n + 2 pixels (Fig. 5 right: four
  # 6x6 panels and three spacer columns, 27 tiles wide).
  foreach(entry "fig4_prior_samples.png (302x302)" "fig4_interpolations.png (302x302)"
                "fig4_style_swap.png (302x332)" "fig5_invariant_grid.png (182x182)"
                "fig5_equivariant_grids.png (812x182)")
    string(REGEX MATCH "^[^ ]+" name "${entry}")
    string(REPLACE "(" "\\(" pattern "${entry}")
    string(REPLACE ")" "\\)" pattern "${pattern}")
    expect_match("${out}" "${pattern}" "figures")
    file(SIZE ${RUN}/figures/${name} size)
    # A blank 302x302 grid compresses to well under 1 kB; decoded digits do not.
    if(size LESS 2000)
      message(FATAL_ERROR "${name} is only ${size} bytes: no digits in it?")
    endif()
  endforeach()
  # Only the files of the figures asked for are checked: a directory where Fig. 5 would go
  # does not stop --which fig4.
  file(REMOVE_RECURSE ${RUN}/figures4)
  file(MAKE_DIRECTORY ${RUN}/figures4/fig5_invariant_grid.png)
  run_tool(0 ${FIGURES} --checkpoint ${CKPT} --threads 1 --out ${RUN}/figures4 --which fig4 --scale 2)
  expect_match("${out}" "fig4_prior_samples.png \\(582x582\\)" "--scale 2")
  if(NOT IS_DIRECTORY ${RUN}/figures4/fig5_invariant_grid.png
     OR EXISTS ${RUN}/figures4/fig5_equivariant_grids.png)
    message(FATAL_ERROR "--which fig4 wrote Fig. 5")
  endif()

elseif(MODE STREQUAL "embed")
  file(REMOVE_RECURSE ${RUN}/embed)
  run_tool(0 ${EMBED} --checkpoint ${CKPT} --threads 1 --out ${RUN}/embed)
  expect_match("${out}" "2000 images, d_r = 2, d_v = 2" "embed")
  # 128-byte headers, then float32 [2000, 2] or int32 [2000].
  foreach(pair "r.npy;16128" "r_pooled.npy;16128" "v.npy;16128" "labels.npy;8128")
    list(GET pair 0 name)
    list(GET pair 1 expected)
    file(SIZE ${RUN}/embed/${name} size)
    if(NOT size EQUAL expected)
      message(FATAL_ERROR "${name}: ${size} bytes, expected ${expected}")
    endif()
  endforeach()
  if(err MATCHES "pool-m")
    message(FATAL_ERROR "a --pool-m note at the default 5: ${err}")
  endif()
  # More than the smallest class holds: said, as train_mnist says it of --m-max.
  run_tool(0 ${EMBED} --checkpoint ${CKPT} --threads 1 --pool-m 999 --out ${RUN}/embed_pool)
  expect_match("${err}" "note: --pool-m 999: a row pools at most the other images of its class: [0-9]+ in class [0-9] \\([0-9]+ images\\), the smallest of .*mnist10k"
               "embed --pool-m 999")
  if(PYTHON)
    # The training split too: numpy recomputes the distance classifier's test error from both
    # splits' f_inv, to be checked against the error train_mnist printed for this checkpoint.
    run_tool(0 ${EMBED} --checkpoint ${CKPT} --threads 1 --split train --out ${RUN}/embed_train)
    file(READ ${RUN}/run/train.log train_log)
    string(REGEX MATCH "test error \\(distance classifier\\): ([0-9.]+)%" _ "${train_log}")
    if(NOT CMAKE_MATCH_1)
      message(FATAL_ERROR "no test error in ${RUN}/run/train.log")
    endif()
    execute_process(COMMAND ${PYTHON} ${SOURCE}/tests/check_embed_npy.py ${RUN}/embed
                            ${SOURCE}/data/mnist10k-labels-idx1-ubyte.gz 8000 2
                            ${RUN}/embed_train ${CMAKE_MATCH_1}
                    RESULT_VARIABLE rc OUTPUT_VARIABLE o ERROR_VARIABLE e)
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR "numpy could not read the .npy files: ${o}${e}")
    endif()
    message(STATUS "${o}")
  endif()

elseif(MODE STREQUAL "classify")
  run_tool(0 ${CLASSIFY} --checkpoint ${CKPT} --threads 1 --out ${RUN}/predictions.csv)
  expect_match("${out}" "classified 2000 images with the distance classifier \\(centroids from 8000"
               "classify")
  if(err MATCHES "note:")
    message(FATAL_ERROR "a note on the checkpoint's own data: ${err}")
  endif()
  # The same error train_mnist printed for this checkpoint.
  file(READ ${RUN}/run/train.log train_log)
  string(REGEX MATCH "test error \\(distance classifier\\): ([0-9.]+)%" _ "${train_log}")
  set(train_error ${CMAKE_MATCH_1})
  expect_match("${out}" "error: ${train_error}% \\([0-9]+ of 2000\\)" "classify vs train_mnist")
  file(STRINGS ${RUN}/predictions.csv lines)
  list(LENGTH lines n)
  list(GET lines 0 header)
  list(GET lines 1 first)
  if(NOT n EQUAL 2001 OR NOT header STREQUAL "index,predicted,label" OR NOT first MATCHES "^0,[0-9],7$")
    message(FATAL_ERROR "predictions.csv: ${n} lines, header '${header}', first row '${first}'")
  endif()
  # Images without labels: no label column, no error line.
  set(images ${SOURCE}/data/mnist10k-images-idx3-ubyte.gz)
  run_tool(0 ${CLASSIFY} --checkpoint ${CKPT} --threads 1 --images ${images} --out ${RUN}/unlabelled.csv)
  expect_match("${out}" "classified 10000 images" "classify --images")
  if(out MATCHES "error:")
    message(FATAL_ERROR "an error rate without labels: ${out}")
  endif()
  file(STRINGS ${RUN}/unlabelled.csv lines)
  list(LENGTH lines n)
  list(GET lines 0 header)
  if(NOT n EQUAL 10001 OR NOT header STREQUAL "index,predicted")
    message(FATAL_ERROR "unlabelled.csv: ${n} lines, header '${header}'")
  endif()

  # A semi-supervised checkpoint: q(y|x) by default, the same error train_mnist printed.
  run_tool(0 ${TRAIN} --labels 100 --epochs 1 --hidden 32 --latent 2 --threads 1 --out ${RUN}/semi)
  string(REGEX MATCH "test error \\(q\\(y\\|x\\)\\): ([0-9.]+)%" _ "${out}")
  set(q_error ${CMAKE_MATCH_1})
  string(REGEX MATCH "test error \\(distance classifier\\): ([0-9.]+)%" _ "${out}")
  set(semi_distance_error ${CMAKE_MATCH_1})
  run_tool(0 ${CLASSIFY} --checkpoint ${RUN}/semi/checkpoint.safetensors --threads 1
           --out ${RUN}/semi.csv)
  expect_match("${out}" "classified 2000 images with the q\\(y\\|x\\) classifier" "semi")
  expect_match("${out}" "error: ${q_error}% " "classify q(y|x) vs train_mnist")
  # Its distance classifier: centroids from the 100 labelled digits train_mnist drew (drawn
  # again from the checkpoint's label count and seed), so the same error.
  run_tool(0 ${CLASSIFY} --checkpoint ${RUN}/semi/checkpoint.safetensors --threads 1
           --method distance --out ${RUN}/semi_distance.csv)
  expect_match("${out}" "\\(centroids from 100 labelled training images\\)" "semi distance")
  expect_match("${out}" "error: ${semi_distance_error}% " "classify distance vs train_mnist, semi")
  if(err MATCHES "note:")
    message(FATAL_ERROR "a note on the semi-supervised checkpoint's own data: ${err}")
  endif()

elseif(MODE STREQUAL "errors")
  run_tool(1 ${FIGURES} --checkpoint ${RUN}/no-such.safetensors)
  expect_match("${err}" "figures: error: .*no-such.safetensors" "missing checkpoint")
  file(REMOVE_RECURSE ${RUN}/failed_embed)
  run_tool(1 ${EMBED} --checkpoint ${SOURCE}/data/mnist10k-labels-idx1-ubyte.gz
           --out ${RUN}/failed_embed/latents)
  expect_match("${err}" "embed: error: .*mnist10k-labels-idx1-ubyte.gz" "not a checkpoint")
  if(EXISTS ${RUN}/failed_embed)
    message(FATAL_ERROR "a failed embed left its output directory ${RUN}/failed_embed behind")
  endif()
  # The training step's CUDA switches are not the inference tools' to take.
  run_tool(1 ${EMBED} --checkpoint ${CKPT} --steps-per-graph 4)
  expect_match("${err}" "embed: error: --steps-per-graph: unknown flag" "--steps-per-graph")
  run_tool(1 ${CLASSIFY} --checkpoint ${CKPT} --method classifier)
  expect_match("${err}" "supervised model, which has no classifier" "--method classifier")
  run_tool(1 ${CLASSIFY} --checkpoint ${CKPT} --labels ${SOURCE}/data/mnist10k-labels-idx1-ubyte.gz)
  expect_match("${err}" "--labels: needs --images" "--labels alone")
  run_tool(1 ${FIGURES} --checkpoint ${CKPT} --split validation)
  expect_match("${err}" "the validation split is empty" "--split validation")
  run_tool(1 ${FIGURES} --checkpoint ${CKPT} --classes 3,x)
  expect_match("${err}" "--classes: expects class numbers" "--classes")
  # A test file flag alone is refused, not ignored in favour of the bundled digits.
  run_tool(1 ${CLASSIFY} --checkpoint ${CKPT} --test-images ${RUN}/no-such-images)
  expect_match("${err}" "--test-images: needs --test-labels" "--test-images alone")
  # A figure larger than a PNG may be is refused before any decoding.
  file(REMOVE_RECURSE ${RUN}/failed_figures)
  run_tool(1 ${FIGURES} --checkpoint ${CKPT} --which fig4 --samples 100 --scale 16
           --out ${RUN}/failed_figures)
  expect_match("${err}" "45002 pixels a side, more than a PNG's 32768" "an oversized figure")
  if(EXISTS ${RUN}/failed_figures)
    message(FATAL_ERROR "a failed figures left its output directory ${RUN}/failed_figures behind")
  endif()
  # Output paths that cannot be written: named, before any work.
  run_tool(1 ${CLASSIFY} --checkpoint ${CKPT} --threads 1 --out ${RUN})
  expect_match("${err}" "classify: error: --out: [^\n]+ is a directory; name a file in it, say [^\n]+/predictions.csv"
               "classify --out DIR")
  if(err MATCHES "\\.tmp\\.")
    message(FATAL_ERROR "classify --out DIR names a temp file: ${err}")
  endif()
  run_tool(1 ${CLASSIFY} --checkpoint ${CKPT} --threads 1 --out=)
  expect_match("${err}" "classify: error: --out: is empty" "classify --out=")
  run_tool(1 ${EMBED} --checkpoint ${CKPT} --threads 1 --out=)
  expect_match("${err}" "embed: error: --out: is empty" "embed --out=")
  run_tool(1 ${FIGURES} --checkpoint ${CKPT} --threads 1 --out ${RUN}/run/train.log)
  expect_match("${err}" "figures: error: --out: .*run/train.log: is a file, not a directory"
               "figures --out FILE")
  run_tool(0 ${FIGURES} --help)
  expect_match("${out}" "--checkpoint.*--split.*--samples" "figures --help")
  if(PYTHON3)
    damaged_inputs()
  endif()
elseif(MODE STREQUAL "trained_data")
  # A run that held out 1000 validation digits: the tools hold out the same by default, so
  # classify's centroids are train_mnist's (7000 digits) and so is its error.
  run_tool(0 ${TRAIN} --validation 1000 --epochs 1 --hidden 32 --latent 2 --threads 1
           --out ${RUN}/val1000)
  string(REGEX MATCH "test error \\(distance classifier\\): ([0-9.]+)%" _ "${out}")
  set(val_error ${CMAKE_MATCH_1})
  set(val_ckpt ${RUN}/val1000/checkpoint.safetensors)
  run_tool(0 ${CLASSIFY} --checkpoint ${val_ckpt} --threads 1 --out ${RUN}/val1000.csv)
  expect_match("${out}" "\\(centroids from 7000 training images\\)" "classify, --validation 1000 run")
  expect_match("${out}" "error: ${val_error}% " "classify vs train_mnist --validation 1000")
  expect_match("${err}" "note: --validation auto: 1000, as the checkpoint's run held out"
               "the validation size taken from the checkpoint")
  if(err MATCHES "other data")
    message(FATAL_ERROR "a note on the checkpoint's own data: ${err}")
  endif()
  # embed's --split auto: that validation split.
  run_tool(0 ${EMBED} --checkpoint ${val_ckpt} --threads 1 --out ${RUN}/val1000_embed)
  expect_match("${out}" "1000 images, d_r = 2" "embed, --validation 1000 run")
  # A training file smaller than its kind's auto hold-out (3,257 of SVHN's): the run's 100 are
  # taken, where the auto default alone would leave no training example.
  file(REMOVE_RECURSE ${RUN}/svhn_small)
  file(MAKE_DIRECTORY ${RUN}/svhn_small)
  execute_process(COMMAND ${MAKE} ${RUN}/svhn_small 600 200 RESULT_VARIABLE rc ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "make_svhn_files failed (${rc}): ${err}")
  endif()
  # Its automatic hold-out is said to be one, with the flag that sets another.
  run_tool(1 ${TRAIN} --data ${RUN}/svhn_small --epochs 1 --threads 1 --out ${RUN}/svhn_auto)
  expect_match("${err}" "--validation: auto holds out 3257, the default for SVHN data, which would leave no training examples out of 600: give --validation N"
               "train_mnist on a small SVHN file")
  # The 28 x 28 model and SVHN's colour images: the data's kind is named, before any hold-out.
  run_tool(1 ${CLASSIFY} --checkpoint ${CKPT} --data ${RUN}/svhn_small --threads 1
           --out ${RUN}/svhn_mnist.csv)
  expect_match("${err}" "train_32x32.mat: images have 3072 values \\(3x32x32\\), the model expects 784 values \\(1x28x28\\)"
               "classify, an MNIST checkpoint on SVHN data")
  run_tool(0 ${TRAIN} --data ${RUN}/svhn_small --validation 100 --epochs 1 --hidden 32 --latent 2
           --threads 1 --out ${RUN}/svhn_small_run)
  run_tool(0 ${CLASSIFY} --checkpoint ${RUN}/svhn_small_run/checkpoint.safetensors
           --data ${RUN}/svhn_small --threads 1 --out ${RUN}/svhn_small.csv)
  expect_match("${out}" "\\(centroids from 500 training images\\)" "classify, small SVHN file")
  expect_match("${err}" "note: --validation auto: 100, as the checkpoint's run held out"
               "the small file's validation size taken from the checkpoint")

  # Other data than the run's (the fixture held none out): a note with the flags of its own.
  run_tool(0 ${CLASSIFY} --checkpoint ${CKPT} --threads 1 --validation 1000
           --out ${RUN}/other.csv)
  expect_match("${err}" "note: [^\n]*run/checkpoint.safetensors was trained on other data: it records 8000 training examples \\(0 held out for validation\\), the data flags give 8000 \\(1000 held out\\) from [^\n]*mnist10k[^\n]*\\. For its own, repeat its run's data flags \\(--data DIR or the IDX file flags\\) with --validation 0"
               "classify --validation 1000 on the fixture")
  set(images ${SOURCE}/data/mnist10k-images-idx3-ubyte.gz)
  set(labels ${SOURCE}/data/mnist10k-labels-idx1-ubyte.gz)
  run_tool(0 ${EMBED} --checkpoint ${CKPT} --threads 1 --train-images ${images}
           --train-labels ${labels} --test-images ${images} --test-labels ${labels}
           --out ${RUN}/other_embed)
  expect_match("${err}" "it records 8000 training examples \\(0 held out for validation\\), the data flags give 10000 \\(5000 held out\\)"
               "embed on the 10,000 digits")
  run_tool(0 ${FIGURES} --checkpoint ${CKPT} --threads 1 --validation 1000 --which fig4
           --out ${RUN}/other_figures)
  expect_match("${err}" "was trained on other data: " "figures")
  # As many examples, other images: a run on the 10,000 digits against Fashion-MNIST's 10,000
  # test images as the training file (where scripts/setup.sh installed them).
  set(fashion /usr/share/datasets/fashion-mnist)
  if(EXISTS ${fashion}/t10k-images-idx3-ubyte.gz AND EXISTS ${fashion}/t10k-labels-idx1-ubyte.gz)
    run_tool(0 ${TRAIN} --train-images ${images} --train-labels ${labels} --test-images ${images}
             --test-labels ${labels} --epochs 1 --hidden 32 --latent 2 --threads 1
             --out ${RUN}/digits10k)
    set(f_images ${fashion}/t10k-images-idx3-ubyte.gz)
    set(f_labels ${fashion}/t10k-labels-idx1-ubyte.gz)
    run_tool(0 ${CLASSIFY} --checkpoint ${RUN}/digits10k/checkpoint.safetensors --threads 1
             --train-images ${f_images} --train-labels ${f_labels} --test-images ${f_images}
             --test-labels ${f_labels} --out ${RUN}/fashion.csv)
    expect_match("${err}" "it records 10000 training examples \\(5000 held out for validation\\), the data flags give as many, but other images or labels, from [^\n]*fashion-mnist/t10k-images"
                 "classify, the same sizes with other images")
  endif()
else()
  message(FATAL_ERROR "unknown MODE '${MODE}'")
endif()
