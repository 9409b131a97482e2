# What train_mnist says about its outputs and data before it trains: an output directory that
# is a file is named as one; SVHN files (made-up blobs in the real .mat format, written by
# make_svhn_files) train the dense MNIST model with a note naming train_svhn.
file(REMOVE_RECURSE ${OUT})
file(MAKE_DIRECTORY ${OUT}/svhn)
set(SMALL --epochs 1 --hidden 8 --latent 4 --threads 1)

file(WRITE ${OUT}/afile "not a directory\n")
execute_process(COMMAND ${TRAIN} ${SMALL} --out ${OUT}/afile
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 1 OR NOT err MATCHES "afile: is a file, not a directory")
  message(FATAL_ERROR "--out naming a file should be refused saying so (${rc}): ${err}")
endif()

execute_process(COMMAND ${MAKE} ${OUT}/svhn 600 200 RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "make_svhn_files failed (${rc}): ${err}")
endif()
execute_process(COMMAND ${TRAIN} ${SMALL} --data ${OUT}/svhn --validation 100 --k 8 --quiet
                        --out ${OUT}/run
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "train_mnist on SVHN files failed (${rc}): ${err}")
endif()
if(NOT err MATCHES "note: --data [^ ]*svhn holds 3x32x32 colour images \\(SVHN\\): .*use train_svhn")
  message(FATAL_ERROR "train_mnist on SVHN files should name train_svhn in a note: ${err}")
endif()
