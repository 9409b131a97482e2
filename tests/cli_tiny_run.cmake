# A one-epoch train_mnist run on the bundled digits with a small network: it must
# print a test error and leave metrics.csv and a loadable checkpoint behind.
file(REMOVE_RECURSE ${OUT})
execute_process(COMMAND ${TRAIN} --epochs 1 --hidden 32 --latent 4 --quiet --out ${OUT}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "train_mnist failed (${rc}): ${err}")
endif()
if(NOT out MATCHES "test error \\(distance classifier\\): [0-9.]+% on 2000 images")
  message(FATAL_ERROR "no test error in the output: ${out}")
endif()
file(STRINGS ${OUT}/metrics.csv lines)
list(LENGTH lines n)
if(NOT n EQUAL 2)
  message(FATAL_ERROR "metrics.csv should hold a header and one epoch, holds ${n} lines")
endif()
if(NOT EXISTS ${OUT}/checkpoint.safetensors)
  message(FATAL_ERROR "no checkpoint written")
endif()
