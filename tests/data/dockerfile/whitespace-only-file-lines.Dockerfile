   
		
FROM a
 	 
RUN x
