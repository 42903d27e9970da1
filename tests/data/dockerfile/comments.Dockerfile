# leading comment
FROM a
# comment
RUN echo hi # not a comment: part of the command
   # indented comment
	# tab-indented comment
#
##double hash
RUN echo '#' "#" \#
CMD ["#"]
