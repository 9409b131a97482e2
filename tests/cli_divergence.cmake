# The tester's `train_mnist --epochs 2 --lr 10`: step 0 moves every parameter by about ±10, so
# step 1's loss is huge but finite and its gradients' squares overflow Adam's v. The run must
# stop at that step with status 1, naming the step, the tensor and the element, and leave no
# checkpoint and no row in the logs (the epoch never finished).
file(REMOVE_RECURSE ${OUT})
execute_process(COMMAND ${TRAIN} --device cpu --epochs 2 --lr 10 --quiet --out ${OUT}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 1)
  message(FATAL_ERROR "expected exit status 1, got '${rc}': ${out}${err}")
endif()
string(CONCAT want
  "train_mnist: error: epoch 1, step 2 of 50 \\(step 2 of the run\\): training diverged: "
  "its loss was finite \\(ELBO -[0-9.]+e\\+[0-9]+\\) but its Adam update made a value "
  "non-finite: Adam moment adam.v of [a-z]+\\.[0-9]+\\.weight \\(element [0-9]+ of [0-9]+ "
  "= inf\\); no checkpoint of this run was written yet; a lower learning rate may avoid it: "
  "start a new run with --lr below this run's 10")
if(NOT err MATCHES "${want}")
  message(FATAL_ERROR "expected /${want}/, got: ${err}")
endif()
if(EXISTS ${OUT}/checkpoint.safetensors)
  message(FATAL_ERROR "a checkpoint was written")
endif()
file(STRINGS ${OUT}/metrics.csv csv)
list(LENGTH csv rows)
if(NOT rows EQUAL 1)
  message(FATAL_ERROR "metrics.csv should hold its header alone, got: ${csv}")
endif()
