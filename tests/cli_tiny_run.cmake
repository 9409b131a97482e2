# A one-epoch train_mnist run on the bundled digits with a small network: it must
# print a test error and leave metrics.csv, metrics.jsonl and a loadable checkpoint behind,
# and print nothing on stderr under --quiet. Then a resume to epoch 2 continues both logs,
# a resume with another latent size is refused naming the field, and --log-json - puts the
# JSON lines on stdout, alone (every other line goes to stderr); a CPU route misnamed in the
# environment is refused. Without --quiet the run names its engine and backend.
file(REMOVE_RECURSE ${OUT})
set(SMALL --hidden 32 --latent 4 --quiet --out ${OUT})
execute_process(COMMAND ${TRAIN} --epochs 1 ${SMALL}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "train_mnist failed (${rc}): ${err}")
endif()
if(NOT out MATCHES "test error \\(distance classifier\\): [0-9.]+% on 2000 images")
  message(FATAL_ERROR "no test error in the output: ${out}")
endif()
if(NOT err STREQUAL "")
  message(FATAL_ERROR "--quiet should leave stderr empty, got: ${err}")
endif()
if(NOT EXISTS ${OUT}/checkpoint.safetensors)
  message(FATAL_ERROR "no checkpoint written")
endif()

# Without --quiet the run says which engine and backend it is (also in its checkpoints).
file(REMOVE_RECURSE ${OUT}-said)
execute_process(COMMAND ${TRAIN} --epochs 1 --hidden 32 --latent 4 --threads 1 --device cpu
                        --out ${OUT}-said
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT err MATCHES
   "\nengine [0-9A-Za-z._+-]+  backend: cpu, float, 1 thread; GEMMs: (oneDNN|OpenBLAS); ")
  message(FATAL_ERROR "no engine and backend line (${rc}): ${err}")
endif()
file(REMOVE_RECURSE ${OUT}-said)

# Each metrics.jsonl line is a JSON object with the CSV's fields, epoch by epoch.
function(check_logs epochs)
  file(STRINGS ${OUT}/metrics.csv csv)
  file(STRINGS ${OUT}/metrics.jsonl json)
  list(LENGTH csv n_csv)
  list(LENGTH json n_json)
  math(EXPR want "${epochs} + 1")
  if(NOT n_csv EQUAL want OR NOT n_json EQUAL epochs)
    message(FATAL_ERROR "after ${epochs} epochs metrics.csv holds ${n_csv} lines (want ${want}) "
                        "and metrics.jsonl ${n_json} (want ${epochs})")
  endif()
  list(GET csv 0 header)
  # The per-epoch time breakdown follows the older columns.
  if(NOT header MATCHES ",seconds,examples_per_s,.*,train_seconds,validation_seconds,checkpoint_seconds$")
    message(FATAL_ERROR "metrics.csv header lacks the time breakdown: ${header}")
  endif()
  string(REPLACE "," ";" fields "${header}")
  foreach(e RANGE 1 ${epochs})
    math(EXPR i "${e} - 1")
    list(GET json ${i} line)
    list(GET csv ${e} row)
    string(REPLACE "," ";" cells "${row}")
    foreach(field IN LISTS fields)
      string(JSON value ERROR_VARIABLE json_error GET "${line}" ${field})
      if(json_error)
        message(FATAL_ERROR "metrics.jsonl line ${e}: ${json_error}: ${line}")
      endif()
    endforeach()
    string(JSON epoch GET "${line}" epoch)
    list(GET cells 0 csv_epoch)
    if(NOT epoch EQUAL e OR NOT csv_epoch EQUAL e)
      message(FATAL_ERROR "line ${e} is epoch ${epoch} in metrics.jsonl, ${csv_epoch} in the CSV")
    endif()
  endforeach()
endfunction()
check_logs(1)

execute_process(COMMAND ${TRAIN} --epochs 2 ${SMALL} --resume ${OUT}/checkpoint.safetensors
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "train_mnist --resume failed (${rc}): ${err}")
endif()
check_logs(2)

execute_process(COMMAND ${TRAIN} --epochs 3 --hidden 32 --latent-r 4 --latent-v 8 --quiet
                        --out ${OUT} --resume ${OUT}/checkpoint.safetensors
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0 OR NOT err MATCHES "checkpoint [^ ]*checkpoint.safetensors was written with latent_v = 4, this run asks for 8")
  message(FATAL_ERROR "a resume with another latent_v should be refused naming it (${rc}): ${err}")
endif()
check_logs(2)  # untouched by the refused run

execute_process(COMMAND ${TRAIN} --epochs 3 ${SMALL} --resume ${OUT}/checkpoint.safetensors
                        --log-json -
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT out MATCHES "{\"epoch\":3,\"elbo\":-?[0-9]")
  message(FATAL_ERROR "--log-json - should print epoch 3's JSON line (${rc}): ${out} ${err}")
endif()
# Only JSON lines on stdout (what a pipe into jq reads): the lines for people go to stderr.
string(REGEX REPLACE "\n$" "" json_out "${out}")
string(REPLACE "\n" ";" lines "${json_out}")
foreach(line IN LISTS lines)
  string(JSON type ERROR_VARIABLE json_error TYPE "${line}")
  if(json_error OR NOT type STREQUAL "OBJECT")
    message(FATAL_ERROR "with --log-json - stdout holds a line that is no JSON object: '${line}'")
  endif()
endforeach()
if(NOT err MATCHES "test error \\(distance classifier\\): [0-9.]+% on 2000 images")
  message(FATAL_ERROR "with --log-json - the test error belongs on stderr: ${err}")
endif()

# A CPU route misnamed in the environment stops the run before it trains, naming the variable.
foreach(variable EQUIVAE_CPU_GEMM EQUIVAE_CPU_CONV)
  file(REMOVE_RECURSE ${OUT}-route)
  execute_process(COMMAND ${CMAKE_COMMAND} -E env ${variable}=mkl
                          ${TRAIN} --epochs 1 --hidden 32 --latent 4 --quiet --out ${OUT}-route
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc EQUAL 0 OR NOT err MATCHES "${variable}: [a-zA-Z ]+ route 'mkl': expected auto, ")
    message(FATAL_ERROR "${variable}=mkl should stop the run naming it (${rc}): ${err}")
  endif()
  if(EXISTS ${OUT}-route/checkpoint.safetensors)
    message(FATAL_ERROR "${variable}=mkl: the refused run wrote a checkpoint")
  endif()
endforeach()
